"""`ttc eval-verifier`: any scorer on held-out labelled candidates.

Reads label files (`ttc label`; `label.continuations: 0` is enough for outcome metrics),
scores every candidate's steps with the scorer through the engine (so its tokens are
counted), and reports step-level AUROC against J (where J is known), outcome AUROC,
within-problem AUROC, and the accuracy of each selection rule on the same candidates (so
at exactly matched generated tokens) against majority voting, with paired bootstrap
intervals and the share of outvoted right answers each rule recovers. With a label file of
other problems (tuning), the combined rule's weight g is fitted there; without one
g = 1. Never fit it on the verifier's own training labels: its scores there are optimistic.
"""
from __future__ import annotations

import asyncio
import math
from typing import Any, Callable

from pydantic import Field

from ttc.core.aggregation import aggregate
from ttc.core.config import StrictModel
from ttc.evaluation.datasets import DatasetConfig
from ttc.evaluation.labeling import problem_of, read_labels, trajectories_of
from ttc.evaluation.verifier_metrics import (
    auroc, fit_verifier_weight, outvoted_recovered, paired_bootstrap, selection_accuracy, subsample,
    within_problem_auroc,
)


async def score_records(engine, records: list[dict[str, Any]], verifier: str | None = None,
                        progress: Callable[[int], None] | None = None) -> tuple[list[list[list[float]]], dict]:
    """Per record, per candidate, the step scores; and the usage the scoring cost, summed."""
    total: dict[str, float] = {}

    async def one(r):
        scores, usage = await engine.ascore(problem_of(r), trajectories_of(r), verifier=verifier)
        for k, v in usage.to_dict().items():
            total[k] = total.get(k, 0) + v
        if progress:
            progress(1)
        return scores

    out = await asyncio.gather(*(one(r) for r in records))
    return list(out), total


def candidates_of(records, scores, samples: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """Per problem: answers, correctness and outcome score (the last step's) of its candidates."""
    problems = [{"id": r["id"], "answers": [s["answer"] for s in r["samples"]],
                 "correct": [bool(s["correct"]) for s in r["samples"]],
                 "tokens": [s["num_tokens"] for s in r["samples"]],
                 "scores": [aggregate(st, "last") if st else float("nan") for st in per]}
                for r, per in zip(records, scores)]
    return subsample(problems, samples, seed) if samples else problems


def metrics(records, scores, tuning: list[dict[str, Any]] | None, samples: int, seed: int = 0
            ) -> dict[str, Any]:
    """Every figure of the evaluation (see the module doc)."""
    step_s, step_y = [], []
    outcome = []
    for r, per in zip(records, scores):
        for s, st in zip(r["samples"], per):
            for v, x in zip(s["j"][:-1], st[:-1]):
                if v is not None:
                    step_s.append(x)
                    step_y.append(v >= 0.5)
            if st:
                outcome.append((r["id"], bool(s["correct"]), st[-1]))
    problems = candidates_of(records, scores, samples, seed)
    g, tune_acc = fit_verifier_weight(tuning) if tuning else (1.0, None)
    rules = {"majority": ("majority", 0.0), "weighted": ("weighted", 0.0), "best_of_n": ("verifier", 0.0),
             "combined": ("combined", g)}
    acc = selection_accuracy(problems, rules)
    out: dict[str, Any] = {
        "problems": len(records), "samples": samples,
        "step_auroc": _r(auroc(step_s, step_y)), "steps_with_j": len(step_s),
        "outcome_auroc": _r(auroc([s for _, _, s in outcome], [y for _, y, _ in outcome])),
        "within_problem_auroc": _r(within_problem_auroc(outcome)),
        "verifier_weight": g, "tuning_accuracy": _r(tune_acc),
        "oracle_coverage": round(sum(any(p["correct"]) for p in problems) / max(len(problems), 1), 4),
        "rules": {},
    }
    out["curve"] = curve(candidates_of(records, scores, None), rules, samples, seed)
    for name, correct in acc.items():
        row = {"accuracy": round(sum(correct) / max(len(correct), 1), 4)}
        if name != "majority":
            gain, lo, hi = paired_bootstrap(correct, acc["majority"], seed=seed)
            row.update(gain_points=round(gain, 2), ci_low=round(lo, 2), ci_high=round(hi, 2),
                       **outvoted_recovered(problems, correct, acc["majority"]))
        out["rules"][name] = row
    return out


def curve(problems, rules, samples: int, seed: int = 0, draws: int = 8) -> list[dict[str, Any]]:
    """Accuracy of each rule against mean generated tokens at k = 1, 2, 4, ... samples (averaged over
    `draws` random k-subsets of each problem's candidates)."""
    points = []
    k = 1
    while k <= samples:
        acc = {name: 0.0 for name in rules}
        tokens = 0.0
        for d in range(draws if k < samples else 1):
            sub = subsample(problems, k, seed + d)
            for name, correct in selection_accuracy(sub, rules).items():
                acc[name] += sum(correct) / max(len(correct), 1)
            tokens += sum(sum(p["tokens"]) for p in sub) / max(len(sub), 1)
        n = draws if k < samples else 1
        points.append({"k": k, "tokens": round(tokens / n, 1), **{name: round(a / n, 4) for name, a in acc.items()}})
        k *= 2
    return points


def plot_curves(evaluations: dict[str, dict[str, Any]], path) -> None:
    """Accuracy against generated tokens per scorer and rule (majority drawn once)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    majority_drawn = False
    for scorer, m in evaluations.items():
        pts = m["curve"]
        x = [p["tokens"] for p in pts]
        for rule in ("majority", "weighted", "best_of_n", "combined"):
            if rule == "majority":
                if majority_drawn:
                    continue
                majority_drawn = True
                ax.plot(x, [p[rule] for p in pts], "k--", marker="o", label="majority")
            else:
                ax.plot(x, [p[rule] for p in pts], marker=".", label=f"{scorer} {rule}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generated tokens per problem")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _r(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 4)


def evaluate_verifier(engine, heldout_path, *, verifier: str | None = None, tuning_path=None,
                      samples: int = 16, seed: int = 0, progress: Callable[[int], None] | None = None
                      ) -> dict[str, Any]:
    """Score held-out (and tuning) candidates with the engine's verifier (or `verifier`), then
    compute `metrics`."""
    records = read_labels(heldout_path)
    tune_records = read_labels(tuning_path) if tuning_path else None

    async def go():
        scores, usage = await score_records(engine, records, verifier, progress)
        tune = None
        if tune_records is not None:
            tune_scores, tune_usage = await score_records(engine, tune_records, verifier, progress)
            tune = candidates_of(tune_records, tune_scores, samples, seed)
            for k, v in tune_usage.items():
                usage[k] = usage.get(k, 0) + v
        return scores, tune, usage

    scores, tune, usage = asyncio.run(go())
    out = metrics(records, scores, tune, samples, seed)
    out["scoring_usage"] = {k: usage.get(k, 0) for k in ("verifier_tokens", "generated_tokens", "requests")}
    return out


def table(name: str, m: dict[str, Any]) -> str:
    lines = [f"{name}: {m['problems']} problems x {m['samples']} samples; step AUROC {m['step_auroc']} "
             f"({m['steps_with_j']} steps), outcome AUROC {m['outcome_auroc']}, within-problem AUROC "
             f"{m['within_problem_auroc']}; combined g={m['verifier_weight']}",
             f"  {'rule':<10} {'accuracy':>8} {'gain':>7} {'95% CI':>16} {'outvoted recovered':>20} {'wins/losses':>12}"]
    for rule, row in m["rules"].items():
        ci = f"[{row['ci_low']:+.1f}, {row['ci_high']:+.1f}]" if "ci_low" in row else ""
        rec = f"{row['recovered']}/{row['outvoted']}" if "outvoted" in row else ""
        wl = f"{row['wins']}/{row['losses']}" if "wins" in row else ""
        gain = f"{row['gain_points']:+.1f}" if "gain_points" in row else ""
        lines.append(f"  {rule:<10} {row['accuracy']:>8.1%} {gain:>7} {ci:>16} {rec:>20} {wl:>12}")
    return "\n".join(lines)


class SearchComparison(StrictModel):
    """A step search guided by the trained verifier against best-of-N majority at the same budgets."""

    strategy: str = Field("beam_search", description="The verifier-guided strategy (any registered name).")
    options: dict[str, Any] = Field(default_factory=dict, description="Its options.")
    problems: int = Field(64, ge=1, description="Held-out problems it runs on (the first ones).")
    budgets: list[int] = Field(default_factory=lambda: [1024, 2048], min_length=1,
                               description="Generated-token budgets per problem.")


class VerifierEvalOptions(StrictModel):
    """The `evaluate_verifier:` section of a recipe (`ttc verifier-pipeline`)."""

    heldout: DatasetConfig | None = Field(None, description="Held-out problems (required by the pipeline); prompts "
                                          "that also occur in the recipe's dataset are removed.")
    tuning: DatasetConfig | None = Field(None, description="Problems on which the combined rule's weight is fitted; "
                                         "None = g = 1.")
    samples: int = Field(16, ge=1, le=4096, description="Candidates per problem (labelled and used for selection).")
    baselines: list[str] = Field(default_factory=lambda: ["mean_logprob"],
                                 description="Other scorers evaluated on the same candidates.")
    baseline_problems: int | None = Field(None, ge=1, description="Held-out problems the baselines score (the first "
                                          "ones); None = all. Self-evaluation is costly on CPU.")
    search: SearchComparison | None = Field(default_factory=SearchComparison,
                                            description="Search against voting; None = skip.")
