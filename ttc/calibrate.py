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

import asyncio
import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field

from strategies.auto import allocator as A
from strategies.auto.strategy import DEFAULT_PROBE_SAMPLES
from ttc.core.budget import Budget, Ledger
from ttc.core.config import StrictModel, validate
from ttc.core.context import SearchContext
from ttc.core.errors import BudgetError, ConfigError
from ttc.core.registry import build
from ttc.core import selection  # the one rule, looked up at each use
from ttc.core.types import Problem
from ttc.evaluation.recipe import Recipe
from ttc.evaluation.runner import run_recipe
from verifiers.replay import ReplayScorer
from workers.replay import ReplayGenerator, ReplaySample

PROBE_LABEL = "probe"


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
    rule_of = {c.label: c.selection for c in configs}
    grid = []
    for r in records:
        if r["strategy"] == PROBE_LABEL or r["correct"] is None:
            continue
        budget = int(r["budget"]["generated_tokens"])
        pool = probes[r["id"]].more.get(r["strategy"]) if r["id"] in probes else None
        if pool and r["strategy"] in rule_of:
            correct, tokens = expected_vote(pool, len(r["candidates"]), rule_of[r["strategy"]])
        else:
            correct, tokens = float(r["correct"]), float(r["usage"]["generated_tokens"])
        grid.append(A.Outcome(r["id"], r["strategy"], budget, correct, tokens))
    budgets = sorted({o.budget for o in grid})
    probe_outcomes = [A.Outcome(pid, A.PROBE_ONLY.label, b, float(p.correct), p.tokens)
                      for pid, p in probes.items() for b in budgets if b >= p.budget]
    return grid + probe_outcomes


# ------------------------------------------------------------------ recorded samples

@dataclass(frozen=True)
class Draw:
    """One recorded sample of a problem."""

    cluster: int  # its answer's equivalence class among the problem's samples (-1: no answer)
    correct: bool
    tokens: int
    score: float | None = None  # its verifier score (the last step's), when it was scored
    answer: str | None = None
    finish_reason: str = "stop"

    def replay(self) -> ReplaySample:
        """The sample as a `ReplayGenerator` serves it again."""
        return ReplaySample(self.answer, self.tokens, self.finish_reason, self.score)  # type: ignore[arg-type]


@dataclass
class ProbeRecord:
    """What the probe of one problem showed, and the samples a best-of-N after it would draw.

    A best-of-N that `auto` runs after the probe draws more samples of the same prompt with the
    same sampling settings; calibration has such samples already: every sample that configuration
    drew at any budget (independent of the probe's). So auto is run on a replay of the probe's
    samples followed by those, in random orders (`AutoReplay`).
    """

    features: A.ProbeFeatures
    tokens: float  # what the probe spent
    budget: int  # what the probe was allowed (samples x max_tokens)
    correct: bool  # its majority answer was correct
    draws: list[Draw] = field(default_factory=list)
    more: dict[str, list[Draw]] = field(default_factory=dict)  # config label -> its samples at every budget
    reference: str | None = None  # the problem's reference answer (a replayed run is judged against it)
    prompt_tokens: int = 0  # what one request of this prompt paid for its prompt, as recorded
    cached_prompt_tokens: int = 0


def probe_records(records: Sequence[dict[str, Any]], configs: Sequence[A.ConfigChoice]) -> dict[str, ProbeRecord]:
    """Per problem: its probe, and every sample of each probe-reusing configuration (all budgets)."""
    # Replayable: best-of-N whose scores are what results.jsonl keeps (the last step's).
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
        cluster = selection.cluster_labels([c["answer"] for c in cands])  # once per problem
        draws = [Draw(cluster[i], bool(c.get("correct")), int(c["num_tokens"]), c.get("score"), c["answer"],
                      c["finish_reason"]) for i, c in enumerate(cands)]
        cut, per_label = len(probe["candidates"]), defaultdict(list)
        for r in ordered[1:]:
            per_label[r["strategy"]] += draws[cut:cut + len(r["candidates"])]
            cut += len(r["candidates"])
        probe_draws = draws[:len(probe["candidates"])]
        usage = probe["usage"]
        requests = max(1, int(usage.get("requests", 1)))
        # auto's answer when it stops after the probe: the probe's majority
        chosen = selection.pick([d.cluster for d in probe_draws], None, "majority")
        out[pid] = ProbeRecord(
            features=A.probe_features(_trajectories(probe), prompt_tokens=int(usage.get("prompt_tokens", 0))),
            tokens=float(usage["generated_tokens"]), budget=int(probe["budget"]["generated_tokens"]),
            correct=chosen is not None and probe_draws[chosen].correct, draws=probe_draws, more=dict(per_label),
            reference=probe.get("reference"), prompt_tokens=int(usage.get("prompt_tokens", 0)) // requests,
            cached_prompt_tokens=int(usage.get("cached_prompt_tokens", 0)) // requests)
    return out


#: Random orders of the recorded samples that an expected accuracy is averaged over.
ORDERINGS = 32


def _orders(n: int, orderings: int | None) -> list[list[int]]:
    """`orderings` random permutations of range(n), the same for every problem (None: as recorded)."""
    if orderings is None:
        return [list(range(n))]
    return [random.Random(k).sample(range(n), n) for k in range(orderings)]


def expected_vote(pool: Sequence[Draw], n: int, rule: str = "majority",
                  orderings: int | None = ORDERINGS) -> tuple[float, float]:
    """Best-of-N over n of `pool`'s samples, chosen by the one selection rule (`ttc.core.selection`):
    (expected accuracy, expected tokens) over random n-subsets (None: the first n as recorded)."""
    n = min(n, len(pool))
    if n == 0:
        return 0.0, 0.0
    idx = np.array([order[:n] for order in _orders(len(pool), orderings if n < len(pool) else None)])
    labels = np.array([d.cluster for d in pool])[idx]
    scores = None
    if rule != "majority":
        scores = np.array([math.nan if d.score is None else d.score for d in pool], dtype=np.float64)[idx]
    chosen = idx[np.arange(len(idx)), selection.pick_many(labels, scores, rule)]
    correct = np.array([d.correct for d in pool], dtype=np.float64)
    tokens = np.array([d.tokens for d in pool], dtype=np.float64)
    return float(correct[chosen].mean()), float(tokens[idx].sum(axis=1).mean())


# ------------------------------------------------------------ auto, run on replayed samples

class _ReplayContext(SearchContext):
    """A search context for a replay: CPU work (votes, answer equivalence) runs inline, since there
    is no backend to keep busy meanwhile and a thread per vote would cost more than the vote."""

    async def offload(self, fn, *args):
        return fn(*args)


@dataclass(frozen=True)
class _Decided:
    """What auto decided for one problem at one budget (from its trace), and its result when it stopped."""

    decision: str  # "stop_after_probe" or "run"
    config: str | None = None
    sub_budget: int | None = None
    result: tuple[float, float] | None = None  # (correct, tokens) of a stop after the probe


class AutoReplay:
    """Judges `auto` by running it: the real strategy over a `ReplayGenerator` of each problem's samples.

    For a problem, a budget and an allocator (a fold's, with a price and an early-stop margin),
    auto runs once with only the probe's samples to serve: its trace says what it decided. A stop
    after the probe is judged by that run. A best-of-N that counts the probe among its N, whose
    configuration's samples were recorded, is run again for each of `orderings` random orders of
    those samples, served after the probe's (the replayed runs must decide as the first did), and
    judged by the mean correctness and generated tokens over the orders. Any other choice (a step
    search: its steps were not recorded) is judged by its recorded run at the largest grid budget
    within the budget auto gave it, plus the probe's tokens (a probe-reusing one costs at least the
    probe). A budget that cannot pay for the probe gives no point, as auto refuses it.

    Runs with identical inputs run once: the first kind per (problem, budget, allocator, price,
    margin); the replays per (problem, budget, configuration chosen, budget given to it, margin,
    order), since after its decision nothing else reaches auto's run. All runs of a call share one
    event loop.
    """

    def __init__(self, probes: dict[str, ProbeRecord], outcomes: Sequence[A.Outcome], *, max_tokens: int,
                 confident_agreement: float | None = None, orderings: int | None = ORDERINGS):
        self.probes = probes
        self.table = {(o.problem_id, o.config, o.budget): o for o in outcomes}
        self.budgets = sorted({o.budget for o in outcomes})
        self.max_tokens = max_tokens
        self.confident_agreement = confident_agreement
        self.orderings = orderings
        self._order_cache: dict[int, list[list[int]]] = {}  # pool size -> the orders its samples are served in
        self._strategies: dict[tuple, Any] = {}  # (id(model), price, margin) -> (model, auto)
        self._decided: dict[tuple, _Decided | None] = {}
        self._replayed: dict[tuple, tuple[float, float]] = {}
        self._samples: dict[tuple[str, str | None], list[ReplaySample]] = {}
        self.runs = 0  # how many times auto ran (for the bench's figures)

    def _served(self, pid: str, label: str | None = None) -> list[ReplaySample]:
        """The probe's samples (label None) or a configuration's, as a replay serves them (built once)."""
        if (pid, label) not in self._samples:
            probe = self.probes[pid]
            self._samples[(pid, label)] = [d.replay() for d in (probe.draws if label is None else probe.more[label])]
        return self._samples[(pid, label)]

    def _auto(self, model: A.AllocatorModel, price: float, margin: int):
        key = (id(model), price, margin)
        if key not in self._strategies:
            options: dict[str, Any] = {"max_tokens": self.max_tokens, "price_per_1k_tokens": price,
                                       "stop_margin": margin}
            if self.confident_agreement is not None:
                options["confident_agreement"] = self.confident_agreement
            # The model is kept with it, so its id is not reused while this memo lives.
            self._strategies[key] = (model, build("strategy", "auto", options).use_allocator(model))
        return self._strategies[key][1]

    async def _run(self, auto, pid: str, budget: int, samples: Sequence[ReplaySample]):
        """One run of auto on `samples`, served in order: (outcome or None, its context, what it raised)."""
        probe = self.probes[pid]
        generator = ReplayGenerator(samples, prompt_tokens=probe.prompt_tokens,
                                    cached_prompt_tokens=probe.cached_prompt_tokens)
        problem = Problem(prompt=pid, id=pid, reference=probe.reference)
        ctx = _ReplayContext(problem, generator.render_prompt(problem), generator,
                             Ledger(Budget(generated_tokens=budget)), ReplayScorer(generator))
        self.runs += 1
        try:
            return await auto.run(ctx), ctx, None
        except Exception as exc:  # noqa: BLE001 - the caller decides whether it matters
            return None, ctx, exc

    async def _decide(self, auto, pid: str, budget: int) -> _Decided | None:
        """Run auto with only the probe's samples to serve; what it decided (None: it refuses the budget)."""
        try:
            auto.check(Budget(generated_tokens=budget), True)
        except BudgetError:
            return None  # auto refuses a budget that cannot pay for its probe
        outcome, ctx, error = await self._run(auto, pid, budget, self._served(pid))
        event = next((e for e in ctx.trace if e["event"] == "auto"), None)
        if event is not None and event["decision"] == "run":
            # What the chosen configuration does with nothing more to serve (a step search may fail) is
            # not judged: only the decision counts here.
            return _Decided("run", event["config"], int(event["sub_budget"]))
        if error is not None:
            raise error
        if event is None:
            raise RuntimeError(f"auto recorded no decision on problem {pid!r}")
        return _Decided(event["decision"], result=(_correct(outcome), float(ctx.ledger.usage.generated_tokens)))

    async def _replay(self, auto, pid: str, budget: int, decided: _Decided,
                      order: Sequence[int]) -> tuple[float, float]:
        """auto on the probe's samples, then its chosen configuration's in `order`: (correct, tokens)."""
        pool = self._served(pid, decided.config)
        samples = self._served(pid) + [pool[i] for i in order]
        outcome, ctx, error = await self._run(auto, pid, budget, samples)
        if error is not None:
            raise error
        m = outcome.metrics
        if (m.get("decision"), m.get("config"), m.get("sub_budget")) != ("run", decided.config, decided.sub_budget):
            raise RuntimeError(f"auto decided otherwise on a replay of problem {pid!r}: {m.get('decision')} "
                               f"{m.get('config')} {m.get('sub_budget')}, not {decided}")
        return _correct(outcome), float(ctx.ledger.usage.generated_tokens)

    def _orders_of(self, pid: str, label: str) -> list[list[int]]:
        """The orders a configuration's samples of a problem are served in after the probe's."""
        n = len(self.probes[pid].more[label])
        if n not in self._order_cache:
            self._order_cache[n] = _orders(n, self.orderings)
        return self._order_cache[n]

    def points(self, jobs: Sequence[tuple[A.AllocatorModel, Sequence[str]]], *,
               price_per_1k_tokens: float | None = None,
               stop_margin: int | None = None) -> dict[int, list[tuple[float, float]]]:
        """What auto does at each grid budget on each job's problems (an allocator and the problems it
        is judged on; a problem may repeat, as in a bootstrap resample): (accuracy, generated tokens,
        probe included) per problem. None for the price or the margin means the allocator's own."""
        return asyncio.run(self._points(jobs, price_per_1k_tokens, stop_margin))

    def decisions(self, model: A.AllocatorModel, ids: Sequence[str], budget: int, *,
                  price_per_1k_tokens: float | None = None, stop_margin: int | None = None) -> Counter:
        """How often auto, run with `model` at `budget`, stopped after the probe or ran each configuration
        (as "LABEL@TOKENS", the budget it gave it) on `ids`."""
        self.points([(model, ids)], price_per_1k_tokens=price_per_1k_tokens, stop_margin=stop_margin)
        p = model.price_per_1k_tokens if price_per_1k_tokens is None else price_per_1k_tokens
        m = model.stop_margin if stop_margin is None else stop_margin
        seen = [self._decided[(pid, budget, id(model), p, m)] for pid in ids]
        return Counter("refused" if d is None else d.decision if d.decision != "run" else f"{d.config}@{d.sub_budget}"
                       for d in seen)

    async def _points(self, jobs, price, margin) -> dict[int, list[tuple[float, float]]]:
        cases = []
        for model, ids in jobs:
            p = model.price_per_1k_tokens if price is None else price
            m = model.stop_margin if margin is None else margin
            auto = self._auto(model, p, m)
            cases += [(model, auto, pid, b, (pid, b, id(model), p, m), m) for pid in ids for b in self.budgets]
        todo = {key: (auto, pid, b) for _, auto, pid, b, key, _ in cases if key not in self._decided}
        for key, decided in zip(todo, await asyncio.gather(*(self._decide(*v) for v in todo.values()))):
            self._decided[key] = decided
        replays = {}
        for _, auto, pid, b, key, m in cases:
            d = self._decided[key]
            if d is None or d.decision != "run" or not self._replayable(pid, d.config):
                continue
            for k, order in enumerate(self._orders_of(pid, d.config)):
                rkey = (pid, b, d.config, d.sub_budget, m, k)
                if rkey not in self._replayed:
                    replays[rkey] = (auto, pid, b, d, order)
        for rkey, result in zip(replays, await asyncio.gather(*(self._replay(*v) for v in replays.values()))):
            self._replayed[rkey] = result
        points: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for model, _, pid, b, key, m in cases:
            point = self._point(model, pid, b, self._decided[key], m)
            if point is not None:
                points[b].append(point)
        return points

    def _replayable(self, pid: str, label: str | None) -> bool:
        probe = self.probes[pid]
        return bool(probe.draws) and bool(probe.more.get(label))

    def _point(self, model, pid: str, budget: int, d: _Decided | None, margin: int) -> tuple[float, float] | None:
        if d is None:
            return None
        if d.result is not None:
            return d.result
        if self._replayable(pid, d.config):
            runs = [self._replayed[(pid, budget, d.config, d.sub_budget, margin, k)]
                    for k in range(len(self._orders_of(pid, d.config)))]
            return sum(c for c, _ in runs) / len(runs), sum(t for _, t in runs) / len(runs)
        # A recorded run: the largest grid budget within the one auto gave the configuration.
        probe = self.probes[pid]
        reuses_probe = model.config(d.config).reuses_probe
        given = d.sub_budget + (probe.tokens if reuses_probe else 0)  # a probe-reusing budget counts the probe
        recorded = [o for o in (self.table.get((pid, d.config, x)) for x in self.budgets if x <= given)
                    if o is not None]
        if not recorded:
            return None
        o = recorded[-1]
        # Without recorded samples, a probe-reusing run costs what the fixed configuration at this
        # budget cost (its first samples are the probe's); other strategies pay both.
        return o.correct, max(o.tokens, probe.tokens) if reuses_probe else probe.tokens + o.tokens


def _correct(outcome) -> float:
    return float(outcome.best is not None and bool(outcome.best.correct))


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


def calibrate(recipe: Recipe, config: CalibrationConfig | None = None, *, progress: bool = True, engine=None,
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
    run_recipe(probe_recipe(recipe, config.probe_samples), progress=progress, make_plots=False, engine=engine)
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
    max_tokens = int(recipe.sampling.get("max_tokens", 256))
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
