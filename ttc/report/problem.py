"""One problem's detail for the report, read from its results record: prompt, answers, votes, and the
search tree drawn from the trace.

The trace is read generically: every `step` event's nodes make the tree (any step search records
them the same way), and every other event is listed in order with its fields, so a strategy that
records its stages or episodes shows them without report code of its own.
"""
from __future__ import annotations

import json
from typing import Any

#: Longest text kept per candidate or node; longer ones are cut with a note (the report stays small).
MAX_TEXT = 3000
#: Characters of candidate and node text one problem's detail carries at most, shared among its texts:
#: 64 candidates of a long-thinking model would otherwise make one problem a megabyte.
DETAIL_TEXT = 24_000
#: Longest rendering of one trace event's fields.
MAX_EVENT = 600


def clip(text: str | None, limit: int = MAX_TEXT) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit} more characters not shown]"


def node_status(node: dict[str, Any], copies: int) -> str:
    """finished, resampled (kept more than once: particle filtering), kept (expanded) or pruned."""
    if node.get("finished"):
        return "finished"
    if node.get("kept"):
        return "resampled" if copies > 1 else "kept"
    return "pruned"


def text_limit(texts: int) -> int:
    """Per-text limit so that `texts` texts fit DETAIL_TEXT together (never under 200 characters)."""
    return max(200, min(MAX_TEXT, DETAIL_TEXT // max(1, texts)))


def search_tree(trace: list[dict[str, Any]], chosen_node: int | None, limit: int = MAX_TEXT
                ) -> dict[str, Any] | None:
    """Nodes by step from the trace's `step` events, each with its status, and the chosen answer's path."""
    nodes: dict[int, dict[str, Any]] = {}
    for event in trace:
        if event.get("event") != "step":
            continue
        copies: dict[int, int] = {}
        for node_id in event.get("resampled") or []:
            copies[node_id] = copies.get(node_id, 0) + 1
        for n in event.get("nodes", []):
            if not isinstance(n, dict) or n.get("id") is None:
                continue  # a node without identity cannot be placed in the tree
            nodes[n["id"]] = {
                "id": n["id"], "parent": n.get("parent"), "step": event.get("step", 0), "score": n.get("score"),
                "status": node_status(n, copies.get(n["id"], 0)), "answer": n.get("answer"),
                "text": clip(n.get("text"), limit), "copies": copies.get(n["id"], 0),
            }
    if not nodes:
        return None
    path: list[int] = []
    current = chosen_node
    while current is not None and current in nodes and current not in path:
        path.append(current)
        current = nodes[current]["parent"]
    for n in nodes.values():
        n["on_path"] = n["id"] in path
        if n["parent"] not in nodes:
            n["parent"] = None  # its parent was never scored (a root's prompt): drawn as a root
    return {"nodes": sorted(nodes.values(), key=lambda n: (n["step"], n["id"])), "chosen_path": path[::-1],
            "steps": max(n["step"] for n in nodes.values())}


def event_rows(trace: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Every event in order, its fields as short JSON; a step's nodes are in the tree, so a step event
    lists its other fields (kept beams, weights, widths) and how many nodes it scored."""
    rows = []
    for event in trace:
        fields = {k: v for k, v in event.items() if k not in ("event", "nodes")}
        if isinstance(event.get("nodes"), list):
            fields["nodes"] = len(event["nodes"])
        rows.append({"event": str(event.get("event")), "fields": clip(json.dumps(fields, default=str), MAX_EVENT)})
    return rows


def problem_detail(record: dict[str, Any]) -> dict[str, Any]:
    """What the page shows for one record of results.jsonl (or one `ttc solve`)."""
    candidates = record.get("candidates") or []
    chosen = next((c.get("node_id") for c in candidates if c.get("chosen")), None)
    trace = record.get("trace") or []
    nodes = sum(len(e.get("nodes") or []) for e in trace if e.get("event") == "step")
    limit = text_limit(len(candidates) + nodes)
    votes = (record.get("metrics") or {}).get("votes") or {}
    return {
        "id": record.get("id"), "config": record.get("config"), "strategy": record.get("strategy"),
        "prompt": clip(record.get("prompt")), "reference": record.get("reference"), "answer": record.get("answer"),
        "correct": record.get("correct"), "usage": record.get("usage") or {},
        "votes": sorted(({"answer": a, "votes": v} for a, v in votes.items()), key=lambda r: -r["votes"]),
        "candidates": [
            {"answer": c.get("answer"), "correct": c.get("correct"), "score": c.get("score"),
             "num_tokens": c.get("num_tokens"), "finish_reason": c.get("finish_reason"),
             "chosen": bool(c.get("chosen")), "text": clip(c.get("text"), limit)}
            for c in candidates
        ],
        "tree": search_tree(trace, chosen, limit),
        "events": event_rows(trace),
        "metrics": clip(json.dumps({k: v for k, v in (record.get("metrics") or {}).items() if k != "votes"},
                                   default=str), MAX_TEXT),
    }
