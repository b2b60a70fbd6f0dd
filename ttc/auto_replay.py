"""Calibration's records of each problem, and `auto` run on a replay of them.

Per problem: the probe's samples and every sample each probe-reusing configuration
drew (independent draws of the same prompt), clustered once. A fixed best-of-N is
judged by its expected accuracy over random N-subsets of them (the one selection
rule of `ttc.core.selection`); `auto` is judged by running the real strategy over a
replay of them (`AutoReplay`), so its decisions, rounds and early stops are its own.
"""
from __future__ import annotations

import asyncio
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from strategies.auto import allocator as A
from ttc.core.budget import Budget, Ledger
from ttc.core.context import SearchContext
from ttc.core.errors import BudgetError
from ttc.core.registry import build
from ttc.core import selection  # the one rule, looked up at each use
from ttc.core.types import Problem
from verifiers.replay import ReplayScorer
from workers.replay import ReplayGenerator, ReplaySample

#: The label of calibration's probe configuration in results.jsonl.
PROBE_LABEL = "probe"


def _trajectories(record: dict[str, Any]) -> list:
    from ttc.core.types import Trajectory

    return [Trajectory([], c["num_tokens"], c["finish_reason"], answer=c["answer"]) for c in record["candidates"]]


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
    prompt_tokens: int = 0  # what one sample of this prompt paid for its prompt, as recorded
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
        sequences = max(1, len(probe["candidates"]))  # prompt tokens are counted once per sequence
        # auto's answer when it stops after the probe: the probe's majority
        chosen = selection.pick([d.cluster for d in probe_draws], None, "majority")
        out[pid] = ProbeRecord(
            features=A.probe_features(_trajectories(probe), prompt_tokens=int(usage.get("prompt_tokens", 0)) // sequences),
            tokens=float(usage["generated_tokens"]), budget=int(probe["budget"]["generated_tokens"]),
            correct=chosen is not None and probe_draws[chosen].correct, draws=probe_draws, more=dict(per_label),
            reference=probe.get("reference"), prompt_tokens=int(usage.get("prompt_tokens", 0)) // sequences,
            cached_prompt_tokens=int(usage.get("cached_prompt_tokens", 0)) // sequences)
    return out


#: Random orders of the recorded samples that an expected accuracy is averaged over.
ORDERINGS = 32


def _orders(n: int, orderings: int | None) -> list[list[int]]:
    """`orderings` random permutations of range(n), the same for every problem (None: as recorded)."""
    if orderings is None:
        return [list(range(n))]
    return [random.Random(k).sample(range(n), n) for k in range(orderings)]


def expected_vote(pool: Sequence[Draw], n: int, rule: str = "majority",
                  orderings: int | None = ORDERINGS, verifier_weight: float = 1.0) -> tuple[float, float]:
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
    chosen = idx[np.arange(len(idx)), selection.pick_many(labels, scores, rule, verifier_weight)]
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
        # The one approximation left: a choice whose samples cannot be replayed (a step search grows its
        # own trees) is judged by its recorded run at the largest grid budget within the one auto gave
        # it, the probe counted as auto counts it. Auto's decision itself was made by auto (above).
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
