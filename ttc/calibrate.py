"""`ttc calibrate`: run a grid on a calibration set, fit an allocator, and evaluate `auto` offline.

The grid is the recipe's strategies x budgets, plus a probe configuration
(the probe's size of samples, scored when the recipe has a verifier); it runs
through the ordinary, resumable recipe runner, so an interrupted calibration
continues where it stopped. Evaluation is offline and cross-fitted: the
allocator is fitted on all folds but one and judged on the held-out fold, next
to the best single fixed configuration and best-of-N majority at the same
budgets. Best-of-N is judged by its expected accuracy over the samples recorded
for each problem (the one selection rule of `ttc.core.selection` over random
N-subsets). `auto` is judged by running it: the real strategy, following the
fold's allocator, over a replay of the recorded samples (`AutoReplay`): its
probe gets the probe's samples, and a best-of-N it picks gets that
configuration's samples in random orders, so its decisions, rounds, early stops
and what they cost are auto's own; its tokens include the probe's. Other
strategies are judged by their recorded run.
"""
from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence, TextIO

from pydantic import Field

from strategies.auto import allocator as A
from strategies.auto.strategy import DEFAULT_PROBE_SAMPLES
from ttc.core.config import SamplingOptions, StrictModel, validate
from ttc.core.errors import ConfigError
from ttc.evaluation.recipe import Recipe
from ttc.evaluation.runner import run_recipe
from ttc.auto_replay import (  # noqa: F401 (re-exported: calibration's API)
    ORDERINGS, PROBE_LABEL, AutoReplay, Draw, ProbeRecord, expected_vote, probe_records,
)



class CalibrationConfig(StrictModel):
    """The options of a calibration (`calibrate()` and `ttc calibrate`): each declared once, with its bounds."""

    probe_samples: int = Field(DEFAULT_PROBE_SAMPLES, ge=1, le=64, description="Samples in the difficulty probe.")
    n_bins: int = Field(3, ge=1, description="Difficulty bins, cut at quantiles of predicted pass@1.")
    folds: int = Field(4, ge=2, description="Cross-fitting folds, for choosing the settings and for evaluate.")
    price_per_1k_tokens: float | None = Field(
        None, ge=0.0, description="For evaluate: judge auto at this price of compute; None = the calibrated one.")
    stop_margin: int | None = Field(
        None, ge=0, description="For evaluate: judge auto with this early-stop margin; None = the calibrated one.")
    name: str | None = Field(None, description="Save as $TTC_HOME/allocators/NAME.json; None = the recipe's name.")
    evaluate: bool = Field(False, description="Also compare auto with the fixed configurations (cross-fitted).")


def probe_recipe(recipe: Recipe, probe_samples: int) -> Recipe:
    """The probe as a recipe of its own: `probe_samples` samples at the probe's budget.

    It writes into the same output folder (its label differs), so both runs resume together.
    With a verifier the probe's samples are scored (best-of-N weighted over them), so a replayed
    weighted best-of-N can count them among its N as `auto` does; its answer is not used: auto
    answers from the probe by majority, which the replay of auto recomputes from the samples.
    """
    max_tokens = int(recipe.sampling.get("max_tokens", SamplingOptions.model_fields["max_tokens"].default))
    strategy: dict[str, Any] = {"name": "repeated_sampling", "n": probe_samples, "label": PROBE_LABEL}
    if recipe.verifier is not None:
        strategy = {"name": "best_of_n", "selection": "weighted", "n": probe_samples, "label": PROBE_LABEL}
    data = {**recipe.model_dump(mode="json"), "budget": probe_samples * max_tokens, "strategy": [strategy]}
    out = Recipe.model_validate(data)
    out._base_dir = recipe._base_dir
    return out


def grid_records(out: Path, *recipes: Recipe) -> list[dict[str, Any]]:
    """The results of these recipes' configurations (with their own settings: the runner refused any
    other), leaving out lines of configurations the output folder holds from earlier grids."""
    from ttc.evaluation.results import ResultsLog
    from ttc.evaluation.sweep import expand

    settings = {(c.label, c.settings) for r in recipes for c in expand(r)}
    return [r for r in ResultsLog(out / "results.jsonl").load() if (r["config"], r.get("settings")) in settings]


def pass1_from_records(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each problem's pass@1 over every sample the calibration drew for it (probe included)."""
    seen: dict[str, list[float]] = defaultdict(list)
    for r in records:
        seen[r["id"]] += [float(c["correct"]) for c in r["candidates"] if c.get("correct") is not None]
    return {pid: sum(v) / len(v) for pid, v in seen.items() if v}


def grid_configs(recipe: Recipe) -> list[A.ConfigChoice]:
    """The grid's configurations (the probe's own run left out), plus "stop after the probe"."""
    return [A.ConfigChoice(label=s.display(), strategy=s.name, options=recipe.strategy_options(s))
            for s in recipe.strategies if s.display() != PROBE_LABEL] + [A.PROBE_ONLY]


def outcomes_from_records(records: Sequence[dict[str, Any]], probes: dict[str, "ProbeRecord"],
                          configs: Sequence[A.ConfigChoice]) -> list[A.Outcome]:
    """Grid outcomes, plus "probe_only" at every grid budget: the probe's own majority answer
    at the probe's cost, so the allocator can learn where stopping after the probe is enough.

    A best-of-N run's outcome is its expected accuracy: the mean over random N-subsets of every
    sample that configuration drew for the problem at any budget (`probes`, from
    `probe_records`; they are independent draws of one prompt with one sampling setting). One
    run's right-or-wrong is a single coin flip; calibration decides on differences of a few
    points, which one flip per problem cannot show. Other strategies keep their recorded run.
    """
    rule_of = {c.label: (c.selection, c.verifier_weight) for c in configs}
    grid = []
    for r in records:
        if r["strategy"] == PROBE_LABEL or r["correct"] is None:
            continue
        budget = int(r["budget"]["generated_tokens"])
        pool = probes[r["id"]].more.get(r["strategy"]) if r["id"] in probes else None
        if pool and r["strategy"] in rule_of:
            rule, weight = rule_of[r["strategy"]]
            correct, tokens = expected_vote(pool, len(r["candidates"]), rule, verifier_weight=weight)
        else:
            correct, tokens = float(r["correct"]), float(r["usage"]["generated_tokens"])
        grid.append(A.Outcome(r["id"], r["strategy"], budget, correct, tokens))
    budgets = sorted({o.budget for o in grid})
    probe_outcomes = [A.Outcome(pid, A.PROBE_ONLY.label, b, float(p.correct), p.tokens)
                      for pid, p in probes.items() for b in budgets if b >= p.budget]
    return grid + probe_outcomes


def accuracy_curve(points: dict[int, list[tuple[float, float]]]) -> list[dict[str, float]]:
    """Per budget: mean accuracy and mean tokens over (accuracy, tokens) points."""
    return [{"budget": b, "accuracy": sum(c for c, _ in v) / len(v), "tokens": sum(t for _, t in v) / len(v),
             "problems": len(v)} for b, v in sorted(points.items()) if v]


def compare(auto: dict[int, list], outcomes: Sequence[A.Outcome], configs: Sequence[A.ConfigChoice],
            ids: Sequence[str], majority_label: str | None) -> dict[str, Any]:
    """auto's curve next to every fixed configuration's, the best fixed one, and best-of-N majority.

    `ids` may repeat a problem (a bootstrap resample): it then counts as often as it appears.
    """
    times = Counter(ids)
    per_config = {}
    for c in [c for c in configs if c.label != A.PROBE_ONLY.label]:
        pts = defaultdict(list)
        for o in outcomes:
            if o.config == c.label and o.problem_id in times:
                pts[o.budget] += [(o.correct, o.tokens)] * times[o.problem_id]
        per_config[c.label] = accuracy_curve(pts)
    # The best single fixed configuration, chosen with hindsight on these problems (a strong baseline).
    best_fixed = max(per_config, key=lambda l: (sum(p["accuracy"] for p in per_config[l]), l))
    result = {"problems": len(ids), "budgets": sorted({o.budget for o in outcomes}), "auto": accuracy_curve(auto),
              "best_fixed": {"config": best_fixed, "curve": per_config[best_fixed]}, "configs": per_config}
    if majority_label is not None and per_config.get(majority_label):
        bon = per_config[majority_label]
        top = max(bon, key=lambda p: (p["accuracy"], -p["tokens"]))
        need = tokens_to_reach(result["auto"], top["accuracy"])
        result.update(best_of_n_majority={"config": majority_label, "curve": bon}, best_of_n_top=top,
                      auto_tokens_to_reach_it=need, compute_ratio=None if need is None else need / top["tokens"])
    return result


def evaluate(probes: dict[str, ProbeRecord], outcomes: Sequence[A.Outcome], configs: Sequence[A.ConfigChoice], *,
             probe_samples: int, max_tokens: int, folds: int, n_bins: int, price_per_1k_tokens: float,
             stop_margin: int, seed: int = 0, majority_label: str | None = None,
             pass1: dict[str, float] | None = None, confident_agreement: float | None = None,
             replay: AutoReplay | None = None) -> dict[str, Any]:
    """Cross-fitted: each fold is judged by running auto with an allocator fitted on the other folds.

    `replay` keeps the runs of auto for reuse by later calls (choose_settings passes one to all);
    without one, a replay is made here, with `confident_agreement` (None: auto's own default).
    """
    ids = sorted(probes)
    random.Random(seed).shuffle(ids)
    fold_of = {pid: i % folds for i, pid in enumerate(ids)}
    if replay is None:
        replay = AutoReplay(probes, outcomes, max_tokens=max_tokens, confident_agreement=confident_agreement)
    jobs = []
    for k in range(folds):
        train = {p for p in ids if fold_of[p] != k}
        model = A.fit({p: probes[p].features for p in train}, [o for o in outcomes if o.problem_id in train],
                      configs, n_bins=n_bins, probe_samples=probe_samples,
                      pass1=None if pass1 is None else {p: v for p, v in pass1.items() if p in train})
        jobs.append((model, [p for p in ids if fold_of[p] == k]))
    auto = replay.points(jobs, price_per_1k_tokens=price_per_1k_tokens, stop_margin=stop_margin)
    return {"folds": folds, "price_per_1k_tokens": price_per_1k_tokens, "stop_margin": stop_margin,
            **compare(auto, outcomes, configs, ids, majority_label)}


#: The prices of compute `ttc calibrate` tries (accuracy 1000 more tokens must buy for a prompt).
PRICE_GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2)

#: The early stops `ttc calibrate` tries (vote margins; 0 = draw every sample at once).
MARGIN_GRID = (0, 4, 3, 2)

#: How much worse (relatively) than the best cross-fitted ratio a gentler setting may be and still
#: be chosen. The best setting sits next to the ones that lose accuracy, so on new prompts it often
#: falls short of best-of-N's top; like the one-standard-error rule, take the gentlest setting that
#: is nearly as good.
RATIO_TOLERANCE = 0.10


def choose_settings(probes, outcomes, configs, *, majority_label: str | None,
                    prices: Sequence[float] = PRICE_GRID, margins: Sequence[int] = MARGIN_GRID,
                    tolerance: float = RATIO_TOLERANCE, **kw) -> tuple[float, int, list[dict[str, Any]]]:
    """The gentlest (price of compute, early-stop margin) whose cross-fitted compute ratio is
    within `tolerance` (relative) of the smallest ratio any pair reached.

    Gentlest means the lowest price, then the latest stop (no early stop, then the largest
    margin): the settings that give up least accuracy. Never reaching best-of-N's top accuracy
    counts as an infinite ratio, so settings that save tokens by losing accuracy are not chosen.
    Without best-of-N majority in the grid there is nothing to compare with: price 0, no early stop.
    Every setting is judged with one `AutoReplay` (`kw["replay"]`, made here when absent), so the
    runs of auto that settings share are made once.
    """
    if majority_label is None:
        return 0.0, 0, []
    gentle = sorted(((p, m) for p in prices for m in margins),
                    key=lambda pm: (pm[0], 0 if pm[1] == 0 else 1.0 / pm[1]))
    if "replay" not in kw and "max_tokens" in kw:
        kw["replay"] = AutoReplay(probes, outcomes, max_tokens=kw["max_tokens"],
                                  confident_agreement=kw.get("confident_agreement"))
    tried = []
    for price, margin in gentle:
        ev = evaluate(probes, outcomes, configs, majority_label=majority_label, price_per_1k_tokens=price,
                      stop_margin=margin, **kw)
        tried.append({"price_per_1k_tokens": price, "stop_margin": margin, "compute_ratio": ev.get("compute_ratio")})
    ratios = [math.inf if t["compute_ratio"] is None else t["compute_ratio"] for t in tried]
    best = min(ratios)
    if best == math.inf:
        return gentle[0][0], gentle[0][1], tried
    pick = next(t for t, r in zip(tried, ratios) if r <= best * (1 + tolerance))
    return pick["price_per_1k_tokens"], pick["stop_margin"], tried


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


def calibrate(recipe: Recipe, config: CalibrationConfig | None = None, *, progress: "bool | TextIO" = True, engine=None,
              **options: Any) -> dict[str, Any]:
    """Run the grid (resumable), fit and save the allocator, optionally evaluate auto offline.

    `options` are `CalibrationConfig` fields, over `config`'s (every bad one reported at once).
    Its `price_per_1k_tokens` and `stop_margin`, when given, are what `evaluate` judges instead
    of the calibrated ones (the allocator file always carries the calibrated ones).
    """
    given = config.model_dump(exclude_unset=True) if config is not None else {}
    config = validate(CalibrationConfig, {**given, **options}, prefix="calibrate")
    if any(b.generated_tokens is None for b in recipe.budgets):
        raise ConfigError("calibration budgets must be generated-token budgets (ints)")
    if any(s.display() == PROBE_LABEL for s in recipe.strategies):
        raise ConfigError(f"strategy label {PROBE_LABEL!r} is reserved for the calibration probe")
    probe = probe_recipe(recipe, config.probe_samples)
    run_recipe(probe, progress=progress, make_plots=False, engine=engine)
    run_recipe(recipe, progress=progress, make_plots=False, engine=engine)
    out = recipe.output_dir()
    records = grid_records(out, probe, recipe)
    configs = grid_configs(recipe)
    probes = probe_records(records, configs)
    feats = {pid: p.features for pid, p in probes.items()}
    outcomes = outcomes_from_records(records, probes, configs)
    data = {"recipe": recipe.name, "dataset": recipe.dataset.model_dump(mode="json"),
            "generator": recipe.generator.model_dump(mode="json"), "problems": len(feats),
            "outcomes": len(outcomes)}
    pass1 = pass1_from_records(records)
    majority = majority_label(configs)
    max_tokens = int(recipe.sampling.get("max_tokens", SamplingOptions.model_fields["max_tokens"].default))
    replay = AutoReplay(probes, outcomes, max_tokens=max_tokens)
    common = dict(probe_samples=config.probe_samples, max_tokens=max_tokens, folds=config.folds,
                  n_bins=config.n_bins, pass1=pass1, replay=replay)
    price, margin, tried = choose_settings(probes, outcomes, configs, majority_label=majority, **common)
    model = A.fit(feats, outcomes, configs, n_bins=config.n_bins, probe_samples=config.probe_samples, data=data,
                  pass1=pass1)
    model = model.model_copy(update={"price_per_1k_tokens": price, "stop_margin": margin})
    saved = [A.save(model, out / "allocator.json"), A.save(model, A.allocator_path(config.name or recipe.name))]
    report: dict[str, Any] = {"allocator": [str(p) for p in saved], "bins": [
        {"problems": b.problems, "best": b.best} for b in model.bins], "edges": model.edges,
        "price_per_1k_tokens": price, "stop_margin": margin, "settings_tried": tried}
    if config.evaluate:
        # Judged at the chosen settings (a little optimistic: they were picked on these folds;
        # bench/allocator.py judges on a separate held-out set).
        report["evaluation"] = evaluate(
            probes, outcomes, configs, majority_label=majority,
            price_per_1k_tokens=price if config.price_per_1k_tokens is None else config.price_per_1k_tokens,
            stop_margin=margin if config.stop_margin is None else config.stop_margin, **common)
    (out / "calibration.json").write_text(json.dumps(report, indent=1))
    return report


def majority_label(configs: Sequence[A.ConfigChoice]) -> str | None:
    """The grid's best-of-N majority configuration (what auto is compared with), if it has one."""
    return next((c.label for c in configs if c.strategy == "best_of_n" and c.selection == "majority"), None)
