"""The results log: one JSON line per finished problem, appended as each finishes.

Append-only and flushed line by line, so a Ctrl-C or a kill loses nothing that
had finished; a rerun reads the log back and skips what is done. Each line carries
a fingerprint of everything that decided it, so a rerun with other settings never
takes an old line for its own. A kill in the
middle of a write can leave one torn last line: it is dropped on load (that
problem simply runs again), never duplicated.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from ttc.core.types import Problem, Solution


def record_key(record: dict[str, Any]) -> tuple[str, str]:
    return record["config"], record["id"]


def fingerprint(settings: Any) -> str:
    """A short stable hash of everything that decides a result (canonical JSON, sorted keys)."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_fingerprint(settings: str, problem: Problem) -> str:
    """A result's fingerprint: its configuration's settings and the dataset problem as loaded
    (prompt, reference, system message, and a code problem's entry point and tests), so an edited
    problem is not taken for the old one."""
    parts = [settings, problem.prompt, problem.reference, problem.system]
    code = {k: problem.metadata[k] for k in ("entry_point", "public_tests", "test") if k in problem.metadata}
    return fingerprint(parts + [code] if code else parts)


class ResultsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self, *, repair: bool = True) -> list[dict[str, Any]]:
        """Every complete record; a torn trailing line is cut off the file (unless `repair` is False: a
        reader such as the report must not change a folder that a run may still be writing)."""
        if not self.path.exists():
            return []
        records, good_bytes = [], 0
        with open(self.path, "rb") as fh:
            for raw in fh:
                try:
                    if not raw.endswith(b"\n"):
                        raise ValueError("torn line")
                    records.append(json.loads(raw))
                except ValueError:
                    break  # everything after a torn line is suspect; those problems rerun
                good_bytes += len(raw)
        if repair and good_bytes < self.path.stat().st_size:
            with open(self.path, "r+b") as fh:
                fh.truncate(good_bytes)
        return records

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, default=str) + "\n").encode()
        # One write of the whole line, then flush and fsync: finished work survives a kill or power cut.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.append(r)


def solution_record(solution: Solution, *, config: str, strategy: str, budget: dict, seed: int,
                    settings: str, problem: Problem) -> dict[str, Any]:
    """What one finished problem leaves in results.jsonl: `settings` is the configuration's
    fingerprint (see `runner.settings_of`), and `fingerprint` adds the dataset problem's own."""
    p = solution.problem
    return {
        "config": config, "strategy": strategy, "strategy_name": solution.strategy, "budget": budget, "seed": seed,
        "settings": settings, "fingerprint": record_fingerprint(settings, problem),
        "id": p.id, "prompt": p.prompt, "reference": p.reference, "answer": solution.answer,
        "correct": solution.correct, "usage": solution.usage.to_dict(),
        # The candidates' texts and the search trace are what the run report draws a problem's detail from.
        "candidates": [
            {"answer": c.answer, "correct": c.correct, "num_tokens": c.num_tokens,
             "finish_reason": c.finish_reason, "score": c.step_scores[-1] if c.step_scores else None,
             "text": c.text, "node_id": c.node_id, "chosen": c is solution.best}
            for c in solution.candidates
        ],
        "metrics": solution.metrics,
        "trace": solution.trace,
        "metadata": p.metadata,
    }
