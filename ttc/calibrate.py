"""`ttc calibrate`: run a grid on a calibration set, fit an allocator, and evaluate `auto` offline.

The grid is the recipe's strategies x budgets, plus a probe configuration
(repeated sampling with the probe's size); it runs through the ordinary,
resumable recipe runner, so an interrupted calibration continues where it
stopped. Evaluation is offline and cross-fitted: the allocator is fitted on
all folds but one and judged on the held-out fold from the recorded outcomes,
next to the best single fixed configuration and best-of-N majority at the same
budgets. A prompt that `auto` stops after the probe is judged by the probe's
majority answer at the probe's cost; otherwise auto's tokens are the probe's
plus the chosen configuration's, so the probe's cost is never hidden.
"""
from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from ttc import allocator as A
from ttc.errors import ConfigError
from ttc.recipe import Recipe
from ttc.runner import run_recipe

PROBE_LABEL = "probe"


def probe_recipe(recipe: Recipe, probe_samples: int) -> Recipe:
    """The probe as a recipe of its own: repeated sampling with the probe's size, at the probe's budget.

    It writes into the same output folder (its label differs), so both runs resume together.
    """
    max_tokens = int(recipe.sampling.get("max_tokens", 256))
    data = {**recipe.model_dump(mode="json"), "budget": probe_samples * max_tokens,
            "strategy": [{"name": "repeated_sampling", "n": probe_samples, "label": PROBE_LABEL}]}
    out = Recipe.model_validate(data)
    out._base_dir = recipe._base_dir
    return out


def _records(out: Path) -> list[dict[str, Any]]:
    from ttc.results import ResultsLog

    return ResultsLog(out / "results.jsonl").load()


def features_from_records(records: Sequence[dict[str, Any]]) -> tuple[dict[str, A.ProbeFeatures], dict[str, dict]]:
    """Probe features (and the probe's own result) per problem, from the probe configuration's records."""
    from ttc.types import Trajectory

    feats, probe_results = {}, {}
    for r in records:
        if r["strategy"] != PROBE_LABEL:
            continue
        samples = [Trajectory([], c["num_tokens"], c["finish_reason"], answer=c["answer"]) for c in r["candidates"]]
        feats[r["id"]] = A.probe_features(samples, prompt_tokens=int(r["usage"].get("prompt_tokens", 0)))
        probe_results[r["id"]] = r
    return feats, probe_results


def pass1_from_records(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each problem's pass@1 over every sample the calibration drew for it (probe included)."""
    seen: dict[str, list[float]] = defaultdict(list)
    for r in records:
        seen[r["id"]] += [float(c["correct"]) for c in r["candidates"] if c.get("correct") is not None]
    return {pid: sum(v) / len(v) for pid, v in seen.items() if v}


def grid_configs(recipe: Recipe) -> list[A.ConfigChoice]:
    return [A.ConfigChoice(label=s.display(), strategy=s.name, options=recipe.strategy_options(s))
            for s in recipe.strategies if s.display() != PROBE_LABEL] + [A.PROBE_ONLY]


def outcomes_from_records(records: Sequence[dict[str, Any]]) -> list[A.Outcome]:
    """Grid outcomes, plus "probe_only" at every grid budget: the probe's own majority answer
    at the probe's cost, so the allocator can learn where stopping after the probe is enough."""
    grid = [A.Outcome(r["id"], r["strategy"], int(r["budget"]["generated_tokens"]), bool(r["correct"]),
                      float(r["usage"]["generated_tokens"]))
            for r in records if r["strategy"] != PROBE_LABEL and r["correct"] is not None]
    budgets = sorted({o.budget for o in grid})
    probes = [A.Outcome(r["id"], A.PROBE_ONLY.label, b, bool(r["correct"]), float(r["usage"]["generated_tokens"]))
              for r in records if r["strategy"] == PROBE_LABEL and r["correct"] is not None
              for b in budgets if b >= r["budget"]["generated_tokens"]]
    return grid + probes


def auto_points(model: A.AllocatorModel, ids: Sequence[str], feats: dict[str, A.ProbeFeatures],
                probe_results: dict[str, dict], table: dict, budgets: Sequence[int],
                confident_agreement: float = 1.0,
                min_gain_per_doubling: float | None = None) -> dict[int, list[tuple[bool, float]]]:
    """What `auto` would have done on `ids` at each budget: (correct, tokens) from recorded outcomes.

    The allocator may pick a smaller calibrated budget than the one given (when more compute
    does not pay for prompts like this one); the outcome recorded at that budget is used.
    `min_gain_per_doubling` None means the allocator file's own price of compute.
    """
    points: dict[int, list[tuple[bool, float]]] = defaultdict(list)
    for pid in ids:
        probe = probe_results[pid]
        probe_tokens = float(probe["usage"]["generated_tokens"])
        for b in budgets:
            if b < probe["budget"]["generated_tokens"]:
                continue  # auto refuses a budget that cannot pay for its probe
            if feats[pid].agreement >= confident_agreement:
                points[b].append((bool(probe["correct"]), probe_tokens))
                continue
            d = model.decide(feats[pid], b, probe_tokens=probe_tokens,
                             probe_budget=probe["budget"]["generated_tokens"],
                             min_gain_per_doubling=min_gain_per_doubling)
            o = table.get((pid, d.label, d.budget))
            if o is None:
                continue
            # auto's best-of-N keeps the probe's samples as the first of its N (they vote), so it
            # costs what the fixed configuration at this budget costs; other strategies pay both.
            reuses_probe = d.config.strategy in A.PROBE_REUSING
            points[b].append((o.correct, max(o.tokens, probe_tokens) if reuses_probe else probe_tokens + o.tokens))
    return points


def _curve(points: dict[int, list[tuple[bool, float]]]) -> list[dict[str, float]]:
    return [{"budget": b, "accuracy": sum(c for c, _ in v) / len(v), "tokens": sum(t for _, t in v) / len(v),
             "problems": len(v)} for b, v in sorted(points.items()) if v]


def compare(auto: dict[int, list], outcomes: Sequence[A.Outcome], configs: Sequence[A.ConfigChoice],
            ids: Sequence[str], majority_label: str | None) -> dict[str, Any]:
    """auto's curve next to every fixed configuration's, the best fixed one, and best-of-N majority."""
    wanted = set(ids)
    per_config = {}
    for c in [c for c in configs if c.label != A.PROBE_ONLY.label]:
        pts = defaultdict(list)
        for o in outcomes:
            if o.config == c.label and o.problem_id in wanted:
                pts[o.budget].append((o.correct, o.tokens))
        per_config[c.label] = _curve(pts)
    # The best single fixed configuration, chosen with hindsight on these problems (a strong baseline).
    best_fixed = max(per_config, key=lambda l: (sum(p["accuracy"] for p in per_config[l]), l))
    result = {"problems": len(ids), "budgets": sorted({o.budget for o in outcomes}), "auto": _curve(auto),
              "best_fixed": {"config": best_fixed, "curve": per_config[best_fixed]}, "configs": per_config}
    if majority_label is not None and per_config.get(majority_label):
        bon = per_config[majority_label]
        top = max(bon, key=lambda p: (p["accuracy"], -p["tokens"]))
        need = tokens_to_reach(result["auto"], top["accuracy"])
        result.update(best_of_n_majority={"config": majority_label, "curve": bon}, best_of_n_top=top,
                      auto_tokens_to_reach_it=need, compute_ratio=None if need is None else need / top["tokens"])
    return result


def evaluate(feats: dict[str, A.ProbeFeatures], probe_results: dict[str, dict], outcomes: Sequence[A.Outcome],
             configs: Sequence[A.ConfigChoice], *, probe_samples: int, folds: int = 4, n_bins: int = 3,
             confident_agreement: float = 1.0, seed: int = 0, majority_label: str | None = None,
             pass1: dict[str, float] | None = None, min_gain_per_doubling: float = 0.0) -> dict[str, Any]:
    """Cross-fitted: each fold is judged by an allocator fitted on the other folds."""
    ids = sorted(feats)
    random.Random(seed).shuffle(ids)
    fold_of = {pid: i % folds for i, pid in enumerate(ids)}
    table = {(o.problem_id, o.config, o.budget): o for o in outcomes}
    budgets = sorted({o.budget for o in outcomes})
    auto: dict[int, list] = defaultdict(list)
    for k in range(folds):
        train = {p for p in ids if fold_of[p] != k}
        model = A.fit({p: feats[p] for p in train}, [o for o in outcomes if o.problem_id in train], configs,
                      n_bins=n_bins, probe_samples=probe_samples,
                      pass1=None if pass1 is None else {p: v for p, v in pass1.items() if p in train})
        held_out = [p for p in ids if fold_of[p] == k]
        for b, pts in auto_points(model, held_out, feats, probe_results, table, budgets,
                                  confident_agreement, min_gain_per_doubling).items():
            auto[b].extend(pts)
    return {"folds": folds, "min_gain_per_doubling": min_gain_per_doubling,
            **compare(auto, outcomes, configs, ids, majority_label)}


#: The prices of compute `ttc calibrate` tries (accuracy a doubling of tokens must buy).
MIN_GAIN_GRID = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.16)


#: How much worse (relatively) than the best cross-fitted ratio a smaller price may be and still be
#: chosen. The best price sits next to the prices that lose accuracy, so on new prompts it often
#: falls short of best-of-N's top; like the one-standard-error rule, take the gentlest price that is
#: nearly as good.
RATIO_TOLERANCE = 0.10


def choose_min_gain(feats, probe_results, outcomes, configs, *, majority_label: str | None,
                    grid: Sequence[float] = MIN_GAIN_GRID, tolerance: float = RATIO_TOLERANCE,
                    **kw) -> tuple[float, list[dict[str, Any]]]:
    """The smallest price of compute whose cross-fitted compute ratio is within `tolerance`
    (relative) of the smallest ratio any price in `grid` reached.

    Never reaching best-of-N's top accuracy counts as an infinite ratio, so a price that
    saves tokens by losing accuracy is not chosen. Without best-of-N majority in the grid
    there is nothing to compare with and the price is 0 (the most accurate choice).
    """
    if majority_label is None:
        return 0.0, []
    tried = []
    for g in grid:
        ev = evaluate(feats, probe_results, outcomes, configs, majority_label=majority_label,
                      min_gain_per_doubling=g, **kw)
        tried.append({"min_gain_per_doubling": g, "compute_ratio": ev.get("compute_ratio")})
    ratios = [math.inf if t["compute_ratio"] is None else t["compute_ratio"] for t in tried]
    best = min(ratios)
    if best == math.inf:
        return min(grid), tried
    chosen = min(t["min_gain_per_doubling"] for t, r in zip(tried, ratios) if r <= best * (1 + tolerance))
    return chosen, tried


def tokens_to_reach(curve: Sequence[dict[str, float]], target: float) -> float | None:
    """Fewest tokens at which a curve reaches `target` accuracy (linear in log tokens between points)."""
    pts = sorted((p["tokens"], p["accuracy"]) for p in curve)
    for i, (t, a) in enumerate(pts):
        if a >= target:
            if i == 0:
                return t
            t0, a0 = pts[i - 1]
            if a0 >= target or a == a0:
                return t
            f = (target - a0) / (a - a0)
            return 2 ** (math.log2(t0) + f * (math.log2(t) - math.log2(t0)))
    return None


def calibrate(recipe: Recipe, *, probe_samples: int = 4, n_bins: int = 3, name: str | None = None,
              run_evaluation: bool = False, folds: int = 4, progress: bool = True, engine=None,
              min_gain_per_doubling: float | None = None) -> dict[str, Any]:
    """Run the grid (resumable), fit and save the allocator, optionally evaluate auto offline."""
    if any(b.generated_tokens is None for b in recipe.budgets):
        raise ConfigError("calibration budgets must be generated-token budgets (ints)")
    if any(s.display() == PROBE_LABEL for s in recipe.strategies):
        raise ConfigError(f"strategy label {PROBE_LABEL!r} is reserved for the calibration probe")
    run_recipe(probe_recipe(recipe, probe_samples), progress=progress, make_plots=False, engine=engine)
    run_recipe(recipe, progress=progress, make_plots=False, engine=engine)
    out = recipe.output_dir()
    records = _records(out)
    feats, probe_results = features_from_records(records)
    outcomes = outcomes_from_records(records)
    configs = grid_configs(recipe)
    data = {"recipe": recipe.name, "dataset": recipe.dataset.model_dump(mode="json"),
            "generator": recipe.generator.model_dump(mode="json"), "problems": len(feats),
            "outcomes": len(outcomes)}
    pass1 = pass1_from_records(records)
    majority = next((c.label for c in configs if c.strategy == "best_of_n"
                     and c.options.get("selection", "majority") == "majority"), None)
    common = dict(probe_samples=probe_samples, folds=folds, n_bins=n_bins, pass1=pass1)
    chosen, tried = choose_min_gain(feats, probe_results, outcomes, configs, majority_label=majority, **common)
    model = A.fit(feats, outcomes, configs, n_bins=n_bins, probe_samples=probe_samples, data=data, pass1=pass1)
    model = model.model_copy(update={"min_gain_per_doubling": chosen})
    saved = [A.save(model, out / "allocator.json"), A.save(model, A.allocator_path(name or recipe.name))]
    report: dict[str, Any] = {"allocator": [str(p) for p in saved], "bins": [
        {"problems": b.problems, "best": b.best} for b in model.bins], "edges": model.edges,
        "min_gain_per_doubling": chosen, "min_gain_tried": tried}
    if run_evaluation:
        # Judged at the chosen price (a little optimistic: the price was picked on these folds;
        # bench/allocator.py judges on a separate held-out set).
        report["evaluation"] = evaluate(feats, probe_results, outcomes, configs, majority_label=majority,
                                        min_gain_per_doubling=chosen if min_gain_per_doubling is None
                                        else min_gain_per_doubling, **common)
    (out / "calibration.json").write_text(json.dumps(report, indent=1))
    return report
