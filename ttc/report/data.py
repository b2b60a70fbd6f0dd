"""What the run report shows, from a run folder's files alone (recipe.json, provenance.json and
results.jsonl, never in-memory state), as plain JSON-able data: the page and its tests read the same
numbers, and a killed or resumed run gets the report its results make.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ttc.core.errors import TTCError
from ttc.evaluation import metrics as M
from ttc.evaluation.results import ResultsLog, fingerprint
from ttc.report.problem import clip, problem_detail

#: Problems whose detail (texts, tree) the page carries at most; more are sampled evenly over the
#: configurations, so a run of thousands of problems stays a file of a few MB.
MAX_DETAILS = 400
#: Longest answer or reference in a table cell.
MAX_CELL = 200
#: Token kinds of the "where the budget went" chart, as Usage names them.
TOKEN_KINDS = ("generated_tokens", "prompt_tokens", "cached_prompt_tokens", "verifier_tokens", "lost_tokens")
EMBEDDED_MODEL = "SmolLM2-135M-Instruct (embedded default)"
#: Strategies whose candidates are independent samples, from which coverage@k and majority@k are drawn.
SAMPLED = ("best_of_n", "repeated_sampling")


class ReportError(TTCError):
    """A folder that cannot be reported on (no results, unreadable files)."""


def read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ReportError(f"{path} is not valid JSON: {exc}") from exc


def config_stats(label: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy with a 90% bootstrap band, and mean usage per problem by kind, of one configuration."""
    first = records[0]
    judged = [bool(r["correct"]) for r in records if r.get("correct") is not None]
    usage = [r.get("usage") or {} for r in records]
    mean = {k: sum(float(u.get(k) or 0) for u in usage) / len(usage) for k in (*TOKEN_KINDS, "flops", "wall_s")}
    low, high = M.accuracy_interval(judged) if judged else (None, None)
    return {
        "config": label, "strategy": first.get("strategy", label), "budget": first.get("budget") or {},
        "seed": first.get("seed"), "problems": len(records), "judged": len(judged),
        "accuracy": M.accuracy(judged) if judged else None, "low": low, "high": high, "mean": mean,
    }


def allocator_choices(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What `auto` chose, by difficulty bin: counts of each configuration (or of stopping after the probe)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        m = r.get("metrics") or {}
        if "decision" not in m:
            continue
        choice = m.get("config") if m["decision"] == "run" else f"stop after probe ({m.get('reason', '?')})"
        counts["—" if m.get("bin") is None else f"bin {m['bin']}"][str(choice)] += 1
    if not counts:
        return None
    return {"bins": sorted(counts, key=natural), "choices": sorted({c for b in counts.values() for c in b}),
            "counts": {b: dict(c) for b, c in counts.items()}}


def scaling(by_config: dict[str, list[dict[str, Any]]], stats: list[dict[str, Any]],
            computed: dict[str, Any] | None = None) -> dict[str, Any]:
    """coverage@k and majority@k (and the power-law fit of coverage) from each strategy's largest budget.

    `computed` is metrics.json's configurations: curves it holds for the same number of results are
    taken from it (the answer equivalence behind them is most of a report's time); others are computed."""
    from ttc.evaluation.report import scaling_curves

    computed = computed or {}
    largest: dict[str, dict[str, Any]] = {}
    for s in stats:
        if not s["problems"] or by_config[s["config"]][0].get("strategy_name") not in SAMPLED:
            continue  # a search's finalists are not independent samples: no coverage@k to draw from them
        key = s["strategy"]
        if key not in largest or (s["budget"].get("generated_tokens") or 0) > (
                largest[key]["budget"].get("generated_tokens") or 0):
            largest[key] = s
    out = {}
    for strategy, s in largest.items():
        known = computed.get(s["config"]) or {}
        if known.get("problems") == s["problems"] and "scaling" in known:
            curves = known["scaling"]
        else:
            curves = scaling_curves(by_config[s["config"]])
        if curves:
            out[strategy] = {"config": s["config"], **curves}
    return out


def choose_details(records: list[dict[str, Any]], limit: int, seed: int = 0) -> set[int]:
    """Indices of the records whose detail the page carries: all, or `limit` spread evenly over the
    configurations (seeded, so the same run gives the same page)."""
    if len(records) <= limit:
        return set(range(len(records)))
    by_config: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_config[r["config"]].append(i)
    rng, chosen = random.Random(seed), set()
    share, extra = divmod(limit, len(by_config))
    for k, indices in enumerate(by_config.values()):
        chosen.update(rng.sample(indices, min(share + (k < extra), len(indices))))
    return chosen


def row(position: int, r: dict[str, Any], detail: int | None) -> dict[str, Any]:
    usage = r.get("usage") or {}
    return {"row": position, "config": r["config"], "id": str(r.get("id")),
            "level": (r.get("metadata") or {}).get("level"), "correct": r.get("correct"),
            "answer": clip(r.get("answer"), MAX_CELL), "reference": clip(r.get("reference"), MAX_CELL),
            "tokens": usage.get("generated_tokens", 0), "verifier_tokens": usage.get("verifier_tokens", 0),
            "candidates": len(r.get("candidates") or []), "detail": detail}


def natural(text: str) -> tuple:
    """Sort key that puts "p2" before "p10" and "bin 2" before "bin 10"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def current_results(records: list[dict[str, Any]], recipe: dict[str, Any]
                    ) -> tuple[list[dict[str, Any]], dict, int, list]:
    """The records of the recipe's own configurations with its settings (what `ttc run` reports: an
    output folder may also hold lines of configurations a recipe no longer runs), their strategies'
    registry names, how many lines were left out, and the recipe's configurations (none without a
    readable recipe: then every record is reported)."""
    from ttc.evaluation.recipe import parse_recipe
    from ttc.evaluation.sweep import expand

    try:
        configs = expand(parse_recipe(recipe))
    except Exception:  # noqa: BLE001 - no recipe.json, or one this installation cannot build: report all lines
        return records, {}, 0, []
    settings = {c.label: c.settings for c in configs}
    kept = [r for r in records if settings.get(r["config"]) == r.get("settings")]
    return kept, {c.strategy_label: c.strategy for c in configs}, len(records) - len(kept), configs


def empty_stats(config) -> dict[str, Any]:
    """A configuration of the recipe with no finished problem (every one failed, or not yet run)."""
    return {"config": config.label, "strategy": config.strategy_label, "budget": config.budget.to_dict(),
            "seed": config.seed, "problems": 0, "judged": 0, "accuracy": None, "low": None, "high": None,
            "mean": {k: 0.0 for k in (*TOKEN_KINDS, "flops", "wall_s")}}


def unresolved_errors(run: Path, records: list[dict[str, Any]]) -> int:
    """Failed (configuration, problem) pairs that no later run has finished (errors.jsonl is append-only)."""
    path = run / "errors.jsonl"
    if not path.is_file():
        return 0
    done = {(r["config"], r.get("id")) for r in records}
    failed = set()
    for line in ResultsLog(path).load(repair=False):
        if (line.get("config"), line.get("id")) not in done:
            failed.add((line.get("config"), line.get("id")))
    return len(failed)


def model_name(generator: dict[str, Any]) -> str:
    if generator.get("model"):
        return str(generator["model"])
    return EMBEDDED_MODEL if generator.get("backend", "vllm") == "vllm" else f"{generator.get('backend')}'s default"


def run_data(run_dir: str | Path, *, max_details: int = MAX_DETAILS) -> dict[str, Any]:
    """Everything the report of the run in `run_dir` shows."""
    run = Path(run_dir)
    results = run / "results.jsonl"
    if not results.is_file():
        raise ReportError(f"run_dir={str(run)!r} has no results.jsonl: not the output folder of a `ttc run`")
    recipe = read_json(run / "recipe.json", {})
    records, names, left_out, configs = current_results(ResultsLog(results).load(repair=False), recipe)
    if not records:
        raise ReportError(f"run_dir={str(run)!r}: results.jsonl holds no finished problem of this recipe yet")
    for r in records:  # results written before records carried it: the recipe says which strategy made them
        r.setdefault("strategy_name", names.get(r.get("strategy")))
    by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_config[r["config"]].append(r)
    order = config_order(by_config)
    stats = [config_stats(label, by_config[label]) for label in order]
    stats += [empty_stats(c) for c in configs if c.label not in by_config]
    picked = choose_details(records, max_details)
    details, rows = [], []
    # Rows in the configurations' order, problems by id within each (results.jsonl is in finishing order).
    rank = {label: i for i, label in enumerate(order)}
    for i in sorted(range(len(records)), key=lambda i: (rank[records[i]["config"]], natural(str(records[i].get("id"))))):
        detail = None
        if i in picked:
            detail = len(details)
            details.append(problem_detail(records[i]))
        rows.append(row(len(rows), records[i], detail))
    generator = recipe.get("generator") or {}
    return {
        "kind": "run",
        "meta": {
            "name": recipe.get("name") or run.name, "folder": str(run.resolve()),
            "model": model_name(generator), "backend": generator.get("backend"),
            "verifier": recipe.get("verifier"), "dataset": recipe.get("dataset"), "sampling": recipe.get("sampling"),
            "strategies": recipe.get("strategy"), "budgets": recipe.get("budget"),
            "provenance": read_json(run / "provenance.json", []),
            "fingerprint": fingerprint(sorted({r.get("settings") or "" for r in records})),
            "problems": len({r.get("id") for r in records}), "records": len(records), "left_out": left_out,
            "errors": unresolved_errors(run, records), "details": len(details),
        },
        "configs": stats, "scaling": scaling(by_config, stats, read_json(run / "metrics.json", {}).get("configs")),
        "allocator": allocator_choices(records),
        "levels": sorted({str(r["level"]) for r in rows if r["level"] is not None}, key=natural),
        "rows": rows, "details": details,
    }


def config_order(by_config: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Strategies in the order their first result came, each one's budgets rising, then seeds: the
    order a reader compares them in (sorting labels as text would put "@2048" before "@512")."""
    first: dict[str, int] = {}
    for label, records in by_config.items():
        first.setdefault(records[0].get("strategy", label), len(first))

    def key(label: str):
        r = by_config[label][0]
        return (first[r.get("strategy", label)], (r.get("budget") or {}).get("generated_tokens") or 0,
                r.get("seed") or 0, label)

    return sorted(by_config, key=key)


def solve_data(record: dict[str, Any]) -> dict[str, Any]:
    """The page of one problem (`ttc solve --report`)."""
    detail = problem_detail(record)
    return {"kind": "problem", "meta": {"name": f"ttc solve ({record.get('strategy')})", "left_out": 0},
            "rows": [row(0, record, 0)], "details": [detail], "configs": [], "scaling": {}, "allocator": None,
            "levels": []}
