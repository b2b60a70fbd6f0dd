"""`ttc calibrate`: run a grid on a calibration set, fit an allocator, and evaluate `auto` offline.

The grid is the recipe's strategies x budgets, plus a probe configuration
(the probe's size of samples, scored when the recipe has a verifier); it runs
through the ordinary, resumable recipe runner, so an interrupted calibration
continues where it stopped. Evaluation is offline and cross-fitted: the
allocator is fitted on all folds but one and judged on the held-out fold, next
to the best single fixed configuration and best-of-N majority at the same
budgets. Best-of-N is judged by its expected accuracy over the samples recorded
for each problem, and `auto` is simulated as it runs (its probe, then a
best-of-N in rounds with its early stop, on random orders of those samples): a
prompt it stops after the probe is judged by the probe's majority answer at the
probe's cost, and otherwise its tokens are the probe's plus what it drew, so the
probe's cost is never hidden. Other strategies are judged by their recorded run.
"""
from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from strategies.auto import allocator as A
from ttc.core.errors import ConfigError
from ttc.evaluation.recipe import Recipe
from ttc.evaluation.runner import run_recipe

PROBE_LABEL = "probe"


def probe_recipe(recipe: Recipe, probe_samples: int) -> Recipe:
    """The probe as a recipe of its own: `probe_samples` samples at the probe's budget.

    It writes into the same output folder (its label differs), so both runs resume together.
    With a verifier the probe's samples are scored (best-of-N weighted over them), so a simulated
    weighted best-of-N can count them among its N as `auto` does; its answer is not used: auto
    answers from the probe by majority, which the simulation recomputes from the samples.
    """
    max_tokens = int(recipe.sampling.get("max_tokens", 256))
    strategy: dict[str, Any] = {"name": "repeated_sampling", "n": probe_samples, "label": PROBE_LABEL}
    if recipe.verifier is not None:
        strategy = {"name": "best_of_n", "selection": "weighted", "n": probe_samples, "label": PROBE_LABEL}
    data = {**recipe.model_dump(mode="json"), "budget": probe_samples * max_tokens, "strategy": [strategy]}
    out = Recipe.model_validate(data)
    out._base_dir = recipe._base_dir
    return out


def _records(out: Path) -> list[dict[str, Any]]:
    from ttc.evaluation.results import ResultsLog

    return ResultsLog(out / "results.jsonl").load()


def _trajectories(record: dict[str, Any]) -> list:
    from ttc.core.types import Trajectory

    return [Trajectory([], c["num_tokens"], c["finish_reason"], answer=c["answer"]) for c in record["candidates"]]


def pass1_from_records(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each problem's pass@1 over every sample the calibration drew for it (probe included)."""
    seen: dict[str, list[float]] = defaultdict(list)
    for r in records:
        seen[r["id"]] += [float(c["correct"]) for c in r["candidates"] if c.get("correct") is not None]
    return {pid: sum(v) / len(v) for pid, v in seen.items() if v}


def grid_configs(recipe: Recipe) -> list[A.ConfigChoice]:
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
    selection = {c.label: c.selection for c in configs}
    grid = []
    for r in records:
        if r["strategy"] == PROBE_LABEL or r["correct"] is None:
            continue
        budget = int(r["budget"]["generated_tokens"])
        pool = probes[r["id"]].more.get(r["strategy"]) if r["id"] in probes else None
        if pool and r["strategy"] in selection:
            correct, tokens = expected_vote(pool, len(r["candidates"]), selection[r["strategy"]])
        else:
            correct, tokens = float(r["correct"]), float(r["usage"]["generated_tokens"])
        grid.append(A.Outcome(r["id"], r["strategy"], budget, correct, tokens))
    budgets = sorted({o.budget for o in grid})
    probe_outcomes = [A.Outcome(pid, A.PROBE_ONLY.label, b, float(p.correct), p.tokens)
                      for pid, p in probes.items() for b in budgets if b >= p.budget]
    return grid + probe_outcomes


# ------------------------------------------------ simulating auto on recorded samples

@dataclass(frozen=True)
class Draw:
    """One recorded sample as the simulation of `auto` sees it."""

    cluster: int  # its answer's equivalence class among the problem's samples (-1: no answer)
    correct: bool
    tokens: int
    score: float | None = None


@dataclass
class ProbeRecord:
    """What the probe of one problem showed, and the samples a best-of-N after it would draw.

    A best-of-N that `auto` runs after the probe draws more samples of the same prompt with the
    same sampling settings; calibration has such samples already: every sample that configuration
    drew at any budget (independent of the probe's). So auto is simulated on the probe's samples
    followed by those, in random orders (or as recorded), and its early stop with them.
    """

    features: A.ProbeFeatures
    tokens: float  # what the probe spent
    budget: int  # what the probe was allowed (samples x max_tokens)
    correct: bool  # its majority answer was correct
    draws: list[Draw] = field(default_factory=list)
    more: dict[str, list[Draw]] = field(default_factory=dict)  # config label -> its samples at every budget
    _simulated: dict = field(default_factory=dict, repr=False)  # simulate_best_of_n's results, by arguments


def probe_records(records: Sequence[dict[str, Any]], configs: Sequence[A.ConfigChoice]) -> dict[str, ProbeRecord]:
    """Per problem: its probe, and every sample of each probe-reusing configuration (all budgets)."""
    from ttc.core.answers import group_answers

    # Simulated from samples: best-of-N whose scores are what results.jsonl keeps (the last step's).
    reusing = {c.label for c in configs if c.reuses_probe and c.strategy != A.PROBE_ONLY_STRATEGY
               and (c.selection == "majority" or c.options.get("aggregation", "last") == "last")}
    probes: dict[str, dict] = {}
    runs: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["strategy"] == PROBE_LABEL:
            probes[r["id"]] = r
        elif r["strategy"] in reusing:
            runs[r["id"]].append(r)
    out = {}
    for pid, probe in probes.items():
        ordered = [probe] + sorted(runs[pid], key=lambda r: (r["strategy"], -r["budget"]["generated_tokens"]))
        cands = [c for r in ordered for c in r["candidates"]]
        cluster = [-1] * len(cands)
        for k, members in enumerate(group_answers([c["answer"] for c in cands])):  # once per problem
            for i in members:
                cluster[i] = k
        draws = [Draw(cluster[i], bool(c.get("correct")), int(c["num_tokens"]), c.get("score"))
                 for i, c in enumerate(cands)]
        cut, per_label = len(probe["candidates"]), defaultdict(list)
        for r in ordered[1:]:
            per_label[r["strategy"]] += draws[cut:cut + len(r["candidates"])]
            cut += len(r["candidates"])
        probe_draws = draws[:len(probe["candidates"])]
        out[pid] = ProbeRecord(
            features=A.probe_features(_trajectories(probe), prompt_tokens=int(probe["usage"].get("prompt_tokens", 0))),
            tokens=float(probe["usage"]["generated_tokens"]), budget=int(probe["budget"]["generated_tokens"]),
            # auto's answer when it stops after the probe: the probe's majority
            correct=simulated_vote(probe_draws, "majority"), draws=probe_draws, more=dict(per_label))
    return out


#: Random orders of the recorded samples that a simulated best-of-N is averaged over.
ORDERINGS = 32


def _orders(n: int, orderings: int | None) -> list[list[int]]:
    """`orderings` random permutations of range(n), the same for every problem (None: as recorded)."""
    if orderings is None:
        return [list(range(n))]
    return [random.Random(k).sample(range(n), n) for k in range(orderings)]


def expected_vote(pool: Sequence[Draw], n: int, selection: str = "majority",
                  orderings: int | None = ORDERINGS) -> tuple[float, float]:
    """Best-of-N over n of `pool`'s samples: (expected accuracy, expected tokens) over random subsets."""
    n = min(n, len(pool))
    results = [(simulated_vote([pool[i] for i in order[:n]], selection), sum(pool[i].tokens for i in order[:n]))
               for order in _orders(len(pool), orderings if n < len(pool) else None)]
    return sum(c for c, _ in results) / len(results), float(sum(t for _, t in results)) / len(results)


def simulated_vote(draws: Sequence[Draw], selection: str = "majority") -> bool:
    """Whether best-of-N over `draws` answers correctly (ties to the answer seen first, as in majority_vote)."""
    if selection == "verifier":  # the best-scored sample, answered or not (ties to the first, as best_scored)
        return bool(draws) and max(draws, key=lambda d: d.score if d.score is not None else -math.inf).correct
    known = [d.score for d in draws if d.score is not None]
    # A sample without a score (a probe recorded before probes were scored) weighs what an average one does.
    neutral = sum(known) / len(known) if known else 1.0
    totals: dict[int, float] = {}
    first: dict[int, int] = {}
    for i, d in enumerate(draws):
        if d.cluster < 0:
            continue
        weight = (d.score if d.score is not None else neutral) if selection == "weighted" else 1.0
        totals[d.cluster] = totals.get(d.cluster, 0.0) + weight
        first.setdefault(d.cluster, i)
    if not totals:
        return False
    winner = max(totals, key=lambda k: (totals[k], -first[k]))
    return draws[first[winner]].correct


def simulated_best_of_n(probe: ProbeRecord, label: str, more_samples: int, selection: str, stop_margin: int,
                        orderings: int | None = ORDERINGS) -> tuple[float, float] | None:
    """auto's best-of-N after the probe: `more_samples` more, in rounds of the probe's size, stopping
    once the vote is settled (see `allocator.vote_settled`); (expected accuracy, expected tokens)
    over random orders of the recorded samples (None: in the order recorded). None when the
    samples were not recorded."""
    if not probe.draws or label not in probe.more:
        return None
    key = (label, more_samples, selection, stop_margin, orderings)
    if key not in probe._simulated:
        pool = probe.more[label]
        runs = [_best_of_n_run(probe.draws + [pool[i] for i in order[:more_samples]], len(probe.draws), selection,
                               stop_margin) for order in _orders(len(pool), orderings)]
        probe._simulated[key] = (sum(c for c, _ in runs) / len(runs), sum(t for _, t in runs) / len(runs))
    return probe._simulated[key]


def _best_of_n_run(seq: Sequence[Draw], start: int, selection: str, stop_margin: int) -> tuple[bool, float]:
    """One simulated run: the first `start` samples, then rounds of `start` until settled or `seq` ends."""
    n, step = start, max(1, start)
    while n < len(seq):
        counts: dict[int, int] = defaultdict(int)
        for d in seq[:n]:
            if d.cluster >= 0:
                counts[d.cluster] += 1
        if A.vote_settled(list(counts.values()), stop_margin):
            break
        n = min(n + step, len(seq))
    used = seq[:n]
    return simulated_vote(used, selection), float(sum(d.tokens for d in used))


def _more_samples(d: A.Decision, probe: ProbeRecord, max_tokens: int) -> int:
    """How many samples auto's best-of-N draws after the probe (as `Auto.run_best_of_n` counts them)."""
    if "n" in d.config.options:
        return max(0, int(d.config.options["n"]) - len(probe.draws))
    return int(max(0.0, d.budget - probe.tokens) // int(d.config.options.get("max_tokens", max_tokens)))


def auto_points(model: A.AllocatorModel, ids: Sequence[str], probes: dict[str, ProbeRecord], table: dict,
                budgets: Sequence[int], *, max_tokens: int, confident_agreement: float = 1.0,
                price_per_1k_tokens: float | None = None, stop_margin: int | None = None,
                orderings: int | None = ORDERINGS) -> dict[int, list[tuple[float, float]]]:
    """What `auto` would have done on `ids` at each budget: (accuracy, tokens), probe included.

    The allocator may pick a smaller calibrated budget than the one given (when more compute
    does not pay for prompts like this one). A best-of-N choice is simulated on recorded samples
    as auto runs it (the probe's samples count among its N; it draws (budget - probe) //
    max_tokens more, stopping early once the vote is settled), averaged over `orderings` random
    orders of the recorded samples (None: as recorded); any other strategy is judged by
    its recorded outcome at the chosen budget, plus the probe's cost. None for the price or the
    margin means the allocator file's own.
    """
    margin = model.stop_margin if stop_margin is None else stop_margin
    points: dict[int, list[tuple[bool, float]]] = defaultdict(list)
    for pid in ids:
        probe = probes[pid]
        for b in budgets:
            if b < probe.budget:
                continue  # auto refuses a budget that cannot pay for its probe
            if probe.features.agreement >= confident_agreement:
                points[b].append((float(probe.correct), probe.tokens))
                continue
            d = model.decide(probe.features, b, probe_tokens=probe.tokens, probe_budget=probe.budget,
                             price_per_1k_tokens=price_per_1k_tokens)
            if d.config.strategy == "probe_only":
                points[b].append((float(probe.correct), probe.tokens))
                continue
            if d.config.reuses_probe:
                simulated = simulated_best_of_n(probe, d.label, _more_samples(d, probe, max_tokens),
                                                d.config.selection, margin, orderings)
                if simulated is not None:
                    points[b].append(simulated)
                    continue
            # A recorded run: the largest recorded budget within the chosen one (which may be interpolated).
            recorded = [o for o in (table.get((pid, d.label, x)) for x in budgets if x <= d.budget) if o is not None]
            if not recorded:
                continue
            o = recorded[-1]
            # Without recorded samples, a probe-reusing run costs what the fixed configuration at
            # this budget cost (its first samples are the probe's); other strategies pay both.
            reuses_probe = d.config.reuses_probe
            points[b].append((o.correct, max(o.tokens, probe.tokens) if reuses_probe else probe.tokens + o.tokens))
    return points


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
             probe_samples: int, max_tokens: int, folds: int = 4, n_bins: int = 3,
             confident_agreement: float = 1.0, seed: int = 0, majority_label: str | None = None,
             pass1: dict[str, float] | None = None, price_per_1k_tokens: float = 0.0,
             stop_margin: int = 0) -> dict[str, Any]:
    """Cross-fitted: each fold is judged by an allocator fitted on the other folds."""
    ids = sorted(probes)
    random.Random(seed).shuffle(ids)
    fold_of = {pid: i % folds for i, pid in enumerate(ids)}
    table = {(o.problem_id, o.config, o.budget): o for o in outcomes}
    budgets = sorted({o.budget for o in outcomes})
    auto: dict[int, list] = defaultdict(list)
    for k in range(folds):
        train = {p for p in ids if fold_of[p] != k}
        model = A.fit({p: probes[p].features for p in train}, [o for o in outcomes if o.problem_id in train],
                      configs, n_bins=n_bins, probe_samples=probe_samples,
                      pass1=None if pass1 is None else {p: v for p, v in pass1.items() if p in train})
        held_out = [p for p in ids if fold_of[p] == k]
        for b, pts in auto_points(model, held_out, probes, table, budgets, max_tokens=max_tokens,
                                  confident_agreement=confident_agreement, price_per_1k_tokens=price_per_1k_tokens,
                                  stop_margin=stop_margin).items():
            auto[b].extend(pts)
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
    """
    if majority_label is None:
        return 0.0, 0, []
    gentle = sorted(((p, m) for p in prices for m in margins),
                    key=lambda pm: (pm[0], 0 if pm[1] == 0 else 1.0 / pm[1]))
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


def calibrate(recipe: Recipe, *, probe_samples: int = 4, n_bins: int = 3, name: str | None = None,
              run_evaluation: bool = False, folds: int = 4, progress: bool = True, engine=None,
              price_per_1k_tokens: float | None = None, stop_margin: int | None = None) -> dict[str, Any]:
    """Run the grid (resumable), fit and save the allocator, optionally evaluate auto offline.

    `price_per_1k_tokens` and `stop_margin`, when given, are what `--evaluate` judges instead
    of the calibrated ones (the allocator file always carries the calibrated ones).
    """
    if any(b.generated_tokens is None for b in recipe.budgets):
        raise ConfigError("calibration budgets must be generated-token budgets (ints)")
    if any(s.display() == PROBE_LABEL for s in recipe.strategies):
        raise ConfigError(f"strategy label {PROBE_LABEL!r} is reserved for the calibration probe")
    run_recipe(probe_recipe(recipe, probe_samples), progress=progress, make_plots=False, engine=engine)
    run_recipe(recipe, progress=progress, make_plots=False, engine=engine)
    out = recipe.output_dir()
    records = _records(out)
    configs = grid_configs(recipe)
    probes = probe_records(records, configs)
    feats = {pid: p.features for pid, p in probes.items()}
    outcomes = outcomes_from_records(records, probes, configs)
    data = {"recipe": recipe.name, "dataset": recipe.dataset.model_dump(mode="json"),
            "generator": recipe.generator.model_dump(mode="json"), "problems": len(feats),
            "outcomes": len(outcomes)}
    pass1 = pass1_from_records(records)
    majority = majority_label(configs)
    common = dict(probe_samples=probe_samples, max_tokens=int(recipe.sampling.get("max_tokens", 256)), folds=folds,
                  n_bins=n_bins, pass1=pass1)
    price, margin, tried = choose_settings(probes, outcomes, configs, majority_label=majority, **common)
    model = A.fit(feats, outcomes, configs, n_bins=n_bins, probe_samples=probe_samples, data=data, pass1=pass1)
    model = model.model_copy(update={"price_per_1k_tokens": price, "stop_margin": margin})
    saved = [A.save(model, out / "allocator.json"), A.save(model, A.allocator_path(name or recipe.name))]
    report: dict[str, Any] = {"allocator": [str(p) for p in saved], "bins": [
        {"problems": b.problems, "best": b.best} for b in model.bins], "edges": model.edges,
        "price_per_1k_tokens": price, "stop_margin": margin, "settings_tried": tried}
    if run_evaluation:
        # Judged at the chosen settings (a little optimistic: they were picked on these folds;
        # bench/allocator.py judges on a separate held-out set).
        report["evaluation"] = evaluate(
            probes, outcomes, configs, majority_label=majority,
            price_per_1k_tokens=price if price_per_1k_tokens is None else price_per_1k_tokens,
            stop_margin=margin if stop_margin is None else stop_margin, **common)
    (out / "calibration.json").write_text(json.dumps(report, indent=1))
    return report


def majority_label(configs: Sequence[A.ConfigChoice]) -> str | None:
    """The grid's best-of-N majority configuration (what auto is compared with), if it has one."""
    return next((c.label for c in configs if c.strategy == "best_of_n" and c.selection == "majority"), None)
