"""Monte-Carlo success estimates J(prefix) on the fake backend, whose success probability is known."""
from __future__ import annotations

import pytest

from ttc.core.budget import Budget, Ledger
from ttc.core.context import SearchContext
from ttc.core.errors import ConfigError
from ttc.core.success import estimate_success, reference_judge, step_prefixes
from ttc.core.types import Problem, SamplingParams
from ttc.testing import FakeGenerator, answer_script


def ctx_for(answers, reference="42", budget=None, seed=0):
    gen = FakeGenerator(answer_script(answers, steps=3, words_per_step=4), seed=seed)
    problem = Problem("q", reference=reference)
    return SearchContext(problem, gen.render_prompt(problem), gen, Ledger(Budget.coerce(budget)))


async def test_j_matches_the_known_success_probability():
    ctx = ctx_for({"42": 0.3, "7": 0.7})
    prefixes = ["w1 w2 w3 w4\n\n", "w1 w2 w3 w4\n\nw5 w6 w7 w8\n\n"]
    estimates = await estimate_success(ctx, prefixes, SamplingParams(n=400, max_tokens=64))
    for e in estimates:
        assert e.trials == 400 and abs(e.j - 0.3) < 0.07  # 3 standard errors of a 400-draw mean
        assert e.tokens > 0 and len(e.answers) == 400
    # One batch for all prefixes, charged to the ledger like any generation.
    assert ctx.ledger.usage.requests == 2 and ctx.ledger.usage.generated_tokens == sum(e.tokens for e in estimates)
    assert ctx.produced == []  # continuations are measurements, not candidates


async def test_a_finished_prefix_is_known_exactly_and_costs_nothing():
    ctx = ctx_for({"42": 1.0})
    right, wrong = await estimate_success(ctx, ["So \\boxed{42}", "So \\boxed{41}"], SamplingParams(n=5))
    assert (right.j, wrong.j, right.trials) == (1.0, 0.0, 5)
    assert ctx.ledger.usage.requests == 0


async def test_an_unaffordable_prefix_gets_none_and_a_custom_judge_replaces_the_reference():
    ctx = ctx_for({"42": 1.0}, budget=30)
    first, second = await estimate_success(ctx, ["a\n\n", "b\n\n"], SamplingParams(n=1, max_tokens=30))
    assert first is not None and second is None  # the budget paid for one continuation only
    ctx = ctx_for({"7": 1.0}, reference=None)
    (e,) = await estimate_success(ctx, ["a\n\n"], SamplingParams(n=3, max_tokens=64), judge=lambda a: a == "7")
    assert e.j == 1.0


async def test_errors_name_what_is_missing():
    ctx = ctx_for({"42": 1.0}, reference=None)
    with pytest.raises(ConfigError, match="reference"):
        await estimate_success(ctx, ["a"], SamplingParams(n=2))
    with pytest.raises(ConfigError, match="params.n"):
        await estimate_success(ctx_for({"42": 1.0}), ["a"], SamplingParams(n=0))
    with pytest.raises(ConfigError, match="reference"):
        reference_judge(None)


def test_step_prefixes_accumulate():
    assert step_prefixes(["a\n\n", "b\n\n", "c"]) == ["a\n\n", "a\n\nb\n\n", "a\n\nb\n\nc"]
