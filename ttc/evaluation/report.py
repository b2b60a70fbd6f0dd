"""metrics.json and plots for a run, computed from results.jsonl alone.

Reading only the results log (never in-memory state) means a resumed run, or a
run killed and reported later, gets exactly the same report.
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from ttc.evaluation import metrics as M


def _powers_of_two(n: int) -> list[int]:
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


def scaling_curves(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """coverage@k, maj@k (and weighted@k / best-of@k with scores), subsampled from one large-N run."""
    # Judged: every candidate has a verdict (a reference answer, or a code problem's hidden tests).
    judged = [r for r in records if r["candidates"] and all(c["correct"] is not None for c in r["candidates"])]
    if not judged:
        return None
    n_min = min(len(r["candidates"]) for r in judged)
    if n_min < 2:
        return None
    from ttc.core.answers import answers_match

    problems = [[M.Sample(c["answer"], bool(c["correct"]), c.get("score")) for c in r["candidates"]] for r in judged]
    ks = _powers_of_two(n_min)
    methods = ["coverage", "majority"]
    if all(s.score is not None for p in problems for s in p):
        methods += ["weighted", "best_of"]
    curves = {m: M.selection_curve(problems, ks, m, equivalent=answers_match) for m in methods}
    out: dict[str, Any] = {"ks": ks, "problems": len(problems), "curves": curves}
    cov = [row["value"] for row in curves["coverage"]]
    try:
        fit = M.fit_power_law_coverage(ks, cov)
        out["coverage_power_law"] = {"a": fit.a, "b": fit.b, "r2": fit.r2}
    except ValueError as exc:
        out["coverage_power_law"] = {"error": str(exc)}
    return out


def summarize(configs: Sequence[Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_config[r["config"]].append(r)
    summary: dict[str, Any] = {"configs": {}, "table": []}
    largest: set[str] = set()
    for key in {(c.strategy_label, c.seed) for c in configs}:
        group = [c for c in configs if (c.strategy_label, c.seed) == key]
        largest.add(max(group, key=lambda c: c.budget.generated_tokens or 0).label)
    for c in configs:
        rs = by_config.get(c.label, [])
        judged = [bool(r["correct"]) for r in rs if r["correct"] is not None]
        used = [r["metrics"]["budget_used"] for r in rs if "budget_used" in r.get("metrics", {})]
        entry = {
            "strategy": c.strategy_label, "budget": c.budget.to_dict(), "seed": c.seed, "problems": len(rs),
            "accuracy": M.accuracy(judged) if judged else None,
            # A configuration whose every problem failed (errors.jsonl) has no usage yet: none, not a crash.
            **(M.usage_per_problem([r["usage"] for r in rs]) if rs else {"mean_generated_tokens": None}),
            "budget_used": sum(used) / len(used) if used else None,  # mean share of the token budget spent
        }
        # Scaling curves come from the largest budget of each strategy: one large-N run gives every k.
        curves = scaling_curves(rs) if c.label in largest else None
        if curves:
            entry["scaling"] = curves
        summary["configs"][c.label] = entry
        summary["table"].append({
            "config": c.label, "strategy": c.strategy_label, "budget": c.budget.to_dict(), "seed": c.seed,
            "problems": len(rs), "accuracy": entry["accuracy"],
            "mean_generated_tokens": entry.get("mean_generated_tokens"), "budget_used": entry["budget_used"],
        })
    return summary


def terminal_table(table: Sequence[dict[str, Any]]) -> list[str]:
    """The run's accuracy against tokens as lines for a terminal: one row per strategy, one column per
    budget, each cell "accuracy @ mean generated tokens" (a configuration per line when budgets carry
    caps other than generated tokens, or seeds repeat)."""
    plain = all(list(r["budget"]) == ["generated_tokens"] for r in table)
    if not table or not plain or len({(r["strategy"], r["budget"]["generated_tokens"]) for r in table}) < len(table):
        lines = []
        for r in table:
            acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.1%}"
            lines.append(f"  {r['config']:<48} problems={r['problems']:<5} accuracy={acc:<7} "
                         f"tokens/problem={r['mean_generated_tokens'] or 0:.0f}")
        return lines
    budgets = sorted({r["budget"]["generated_tokens"] for r in table})
    strategies = list(dict.fromkeys(r["strategy"] for r in table))
    cells = {(r["strategy"], r["budget"]["generated_tokens"]): r for r in table}
    width = max(len(s) for s in strategies) + 2
    problems = max(r["problems"] for r in table)
    lines = [f"  accuracy @ generated tokens per problem (mean), {problems} problems; columns: budget in tokens",
             "  " + "".ljust(width) + "".join(f"{b:>16}" for b in budgets)]
    for s in strategies:
        row = "  " + s.ljust(width)
        for b in budgets:
            r = cells.get((s, b))
            text = "—" if r is None or r["accuracy"] is None else \
                f"{r['accuracy']:.0%} @ {r['mean_generated_tokens'] or 0:.0f}"
            row += f"{text:>16}"
        lines.append(row)
    return lines


def accuracy_vs_tokens_plot(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], path: Path, *,
                            xlabel: str, ylabel: str, title: str) -> None:
    """One line per named series of (tokens, accuracy) points, tokens on a log2 axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, pts in series:
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(summary: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in summary["table"]:
        if row["accuracy"] is not None and row["mean_generated_tokens"]:
            lines[row["strategy"]].append((row["mean_generated_tokens"], row["accuracy"]))
    if lines:
        accuracy_vs_tokens_plot(sorted(lines.items()), out / "accuracy_vs_tokens.png",
                                xlabel="generated tokens per problem (mean)", ylabel="accuracy",
                                title="Accuracy vs compute, at matched token budgets")
        written.append("accuracy_vs_tokens.png")
    scaled = {label: c["scaling"] for label, c in summary["configs"].items() if "scaling" in c}
    for label, sc in sorted(scaled.items()):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for method, rows in sc["curves"].items():
            ks = [r["k"] for r in rows]
            ax.plot(ks, [r["value"] for r in rows], marker="o", label=f"{method}@k")
            ax.fill_between(ks, [r["low"] for r in rows], [r["high"] for r in rows], alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("samples k")
        ax.set_ylabel("fraction of problems solved")
        ax.set_title(f"{label}: {sc['problems']} problems (95% bootstrap bands)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
        name = "scaling.png" if len(scaled) == 1 else f"scaling_{slug}.png"
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(name)
    return written


def json_safe(x: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [json_safe(v) for v in x]
    return x


def write_report(out: Path, configs: Sequence[Any], records: list[dict[str, Any]], *,
                 make_plots: bool = True) -> dict[str, Any]:
    summary = summarize(configs, records)
    if make_plots:
        summary["plots"] = plot(summary, out)
    (out / "metrics.json").write_text(json.dumps(json_safe(summary), indent=2))
    return summary
