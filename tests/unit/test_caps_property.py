"""No cap is ever exceeded: every strategy, every kind of scorer, random caps of every kind, injected failures.

Generated, prompt and verifier tokens and FLOPs are reserved before a request or a score call is
sent, so what a solve spends (or had spent when it failed) never passes a cap. The seconds cap is
exercised with an injected clock in test_budget.py, not timed here.
"""
from __future__ import annotations

import random

import pytest

from ttc.core.budget import Budget
from ttc.core.errors import BudgetError, ConfigError, SolveError
from ttc.engine import Engine
from ttc.testing import FakeGenerator, FakeScorer, answer_script
from verifiers.oracle import OracleScorer
from verifiers.self_eval import SelfEvalScorer

STRATEGIES = ["repeated_sampling", "best_of_n", "beam_search", "dvts", "rebase", "particle_filtering", "auto"]
SCORERS = ["fake", "self_eval", "oracle"]
CASES = 300


def scorer_of(kind: str, rng: random.Random):
    if kind == "fake":
        return FakeScorer({"1": 0.9, "2": 0.2}, noise=0.2, seed=rng.randint(0, 9), tokens_per_step=rng.randint(1, 40))
    return SelfEvalScorer() if kind == "self_eval" else OracleScorer()


def options_of(strategy: str, rng: random.Random) -> dict:
    options = {"max_tokens": rng.randint(16, 200)}
    if strategy in ("best_of_n",):
        options["selection"] = rng.choice(["majority", "weighted", "verifier", "combined"])
    if strategy in ("beam_search", "dvts", "rebase", "particle_filtering"):
        options.update(max_step_tokens=rng.randint(4, 40), n=rng.choice([2, 4, 8]), max_steps=rng.randint(1, 6))
        if strategy in ("beam_search", "dvts"):
            options["beam_width"] = 2
    if strategy in ("repeated_sampling", "best_of_n"):
        options["n"] = rng.choice([None, rng.randint(1, 16)])
    if strategy == "auto":
        options["probe_samples"] = rng.randint(1, 4)
    return options


def caps_of(rng: random.Random) -> Budget:
    return Budget(generated_tokens=rng.randint(50, 4000),
                  prompt_tokens=rng.choice([None, rng.randint(20, 3000)]),
                  verifier_tokens=rng.choice([None, rng.randint(1, 3000)]),
                  flops=rng.choice([None, 2e6 * rng.randint(50, 8000)]))


def spent_within(usage, budget: Budget) -> list[str]:
    over = []
    for name in ("generated_tokens", "prompt_tokens", "verifier_tokens", "flops"):
        cap = getattr(budget, name)
        if cap is not None and getattr(usage, name) > cap:
            over.append(f"{name}: spent {getattr(usage, name)} > cap {cap}")
    return over


def test_no_cap_is_ever_exceeded():
    ran = failed = refused = 0
    for case in range(CASES):
        rng = random.Random(case)
        strategy, kind = rng.choice(STRATEGIES), rng.choice(SCORERS)
        budget, options = caps_of(rng), options_of(strategy, rng)
        fail_on = rng.choice([None, None, None, rng.randint(1, 6)])  # an injected backend failure
        gen = FakeGenerator(answer_script({"1": 0.5, "2": 0.5}, steps=rng.randint(1, 6),
                                          words_per_step=rng.randint(1, 20)), seed=case, fail_on_call=fail_on)
        with Engine(generator=gen, scorer=scorer_of(kind, rng)) as engine:
            try:
                sol = engine.solve("What is 1 + 1?", budget, strategy, reference="2", **options)
                usage = sol.usage
                ran += 1
            except SolveError as exc:  # failed part-way: what it had spent is kept, and within the caps
                usage = exc.partial.usage
                failed += 1
            except (BudgetError, ConfigError):  # refused before spending anything
                refused += 1
                continue
        over = spent_within(usage, budget)
        assert not over, f"case {case}: {strategy} with {kind}, {budget}, {options}: {over}"
    # The cases must mostly run, or the property says little.
    assert ran > CASES * 0.6 and failed > 10, (ran, failed, refused)


def test_the_seconds_cap_covers_scoring():
    """A scorer that would take 30 s is cut off at the seconds cap; the samples are still voted on."""
    import asyncio
    import time

    class SlowScorer(FakeScorer):
        async def score(self, problem, trajectories):
            await asyncio.sleep(30)
            return await super().score(problem, trajectories)

    with Engine(generator=FakeGenerator(), scorer=SlowScorer()) as engine:
        start = time.monotonic()
        sol = engine.solve("q", Budget(generated_tokens=4000, seconds=0.5), "best_of_n", n=4, max_tokens=50,
                           selection="weighted")
        took = time.monotonic() - start
    assert took < 10  # far below the scorer's 30 s: the cap, not the scorer, ended it
    assert any(ev["event"] == "time_budget_exhausted" for ev in sol.trace)
    assert sol.metrics["budget_limited"] and sol.answer is not None and len(sol.candidates) == 4


def test_compute_lost_to_failures_and_cut_offs_is_reported():
    """A failed request and one cut off by the time cap are reported in usage.lost_*, never as spent."""
    gen = FakeGenerator(answer_script({"1": 0.5, "2": 0.5}, steps=4, words_per_step=3), fail_on_call=2)
    with Engine(generator=gen, scorer=FakeScorer()) as engine, pytest.raises(SolveError) as failed:
        engine.solve("q", 10_000, "beam_search", n=4, beam_width=2, max_tokens=200, max_step_tokens=10)
    usage = failed.value.partial.usage
    assert usage.lost_requests == 2 and usage.lost_tokens == 2 * 2 * 10  # the failed step: 2 beams x n=2 x 10
    assert usage.generated_tokens == sum(c.num_tokens for c in failed.value.partial.candidates)

    slow = FakeGenerator(latency_s=30)
    with Engine(generator=slow) as engine:
        sol = engine.solve("q", Budget(generated_tokens=400, seconds=0.3), "best_of_n", n=4, max_tokens=100)
    assert sol.usage.lost_requests == 1 and sol.usage.lost_tokens == 400 and sol.usage.generated_tokens == 0
