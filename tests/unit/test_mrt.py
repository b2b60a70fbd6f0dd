"""The `mrt` strategy on scripted traces whose J is known: progress, the stopping rule, forcing on,
the vote, and the accounting of every forced answer."""
from __future__ import annotations

import random

import pytest

from ttc.core.errors import BudgetError, ConfigError
from ttc.core.types import Problem
from ttc.engine import Engine
from ttc.testing import FakeGenerator, thinking_script
from verifiers.oracle import OracleScorer

EPISODES = {"min_chars": 0}


def engine(script, seed=0, scorer=None):
    return Engine(backend="fake", generator=FakeGenerator(script, seed=seed), scorer=scorer)


def problem():
    return Problem("What is 6 x 7?", reference="42")


def test_stops_once_thinking_stops_paying():
    # Wrong before thinking, right from the first episode on, and the model would think for 6 episodes.
    script = thinking_script([{"7": 1.0}] + [{"42": 1.0}] * 6)
    s = engine(script).solve(problem(), 4000, "mrt", episodes=EPISODES, patience=2)
    assert s.metrics["j"] == [[0.0, 1.0, 1.0, 1.0]]  # J against the consensus (42) of the forced answers
    assert s.metrics["progress"] == [[1.0, 0.0, 0.0]] and s.metrics["ends"] == ["stopped"]
    assert s.metrics["episodes"] == [3] and s.candidates[0].text.count("\n\nWait") == 2  # episodes 4-6 never thought
    assert s.answer == "42" and s.correct


def test_progress_with_the_scorer_and_forced_on_while_it_pays():
    # J known exactly with the oracle: 0, then 0.5 after one episode, 1 after two; then the model stops.
    script = thinking_script([{"7": 1.0}, {"7": 1.0, "42": 1.0}, {"42": 1.0}])
    s = engine(script, scorer=OracleScorer()).solve(problem(), 4000, "mrt", episodes=EPISODES, progress="scorer",
                                                    forced_answers=64)
    j = s.metrics["j"][0]
    assert j[0] == 0.0 and 0.3 < j[1] < 0.7 and j[2] == 1.0
    # It stopped after episode 2 with progress still positive: forced on once, then it made none and ended.
    assert s.metrics["extensions"] == [1] and s.metrics["ends"] == ["ended"] and s.metrics["progress"][0][-1] == 0.0
    assert s.answer == "42"


def test_every_forced_answer_is_charged():
    script = thinking_script([{"7": 1.0}, {"7": 1.0, "42": 1.0}, {"42": 1.0}, {"42": 1.0}])
    s = engine(script).solve(problem(), 4000, "mrt", episodes=EPISODES, traces=2, forced_answers=3)
    m = s.metrics
    assert m["forced_answers"] == 3 * sum(len(j) for j in m["j"])
    thinking_and_final = sum(c.num_tokens for c in s.candidates)
    assert s.usage.generated_tokens == thinking_and_final + m["forced_answer_tokens"]
    assert m["forced_answer_tokens"] == m["forced_answers"]  # the fake answers in one token
    assert all(c.answer is not None for c in s.candidates)


def test_answer_is_the_weighted_vote_of_forced_and_final_answers():
    # Forced answers say 7 before thinking; the trace then answers 42 at every boundary and at the end.
    script = thinking_script([{"7": 1.0}, {"42": 1.0}])
    s = engine(script).solve(problem(), 4000, "mrt", episodes=EPISODES, forced_answers=4)
    assert s.metrics["votes"] == {"7": 4.0, "42": 8.0}  # 4 forced at the end + the final answer weighing 4
    assert s.answer == "42"


@pytest.mark.parametrize("seed", range(30))
def test_never_over_budget_and_always_an_answer(seed):
    rng = random.Random(seed)
    script = thinking_script([{"7": 0.5, "42": 0.5}] * rng.randrange(2, 9), words_per_episode=rng.randrange(3, 30))
    options = {"episodes": {"min_chars": rng.choice([0, 40])}, "traces": rng.randrange(1, 4),
               "forced_answers": rng.randrange(1, 6), "max_tokens": rng.randrange(4, 40),
               "thinking": {"max_thinking_tokens": rng.randrange(10, 200), "answer_tokens": rng.randrange(1, 6),
                            "min_thinking_tokens": rng.choice([0, 10])}}
    least = options["traces"] * (options["forced_answers"] + 1) * options["thinking"]["answer_tokens"]
    budget = rng.randrange(least, least + 400)
    s = engine(script, seed=seed).solve(problem(), budget, "mrt", **options)
    assert s.usage.generated_tokens <= budget
    assert s.answer is not None and all(t <= options["thinking"]["max_thinking_tokens"]
                                        for t in s.metrics["thinking_tokens"])


def test_bad_settings_are_clear_errors():
    script = thinking_script([{"42": 1.0}, {"42": 1.0}])
    with pytest.raises(BudgetError, match="forced answers"):
        engine(script).solve(problem(), 50, "mrt", forced_answers=4)  # 5 x 32 answer tokens do not fit
    with pytest.raises(ConfigError, match="needs a verifier"):
        engine(script).solve(problem(), 4000, "mrt", progress="scorer")
    with pytest.raises(ConfigError, match="patience"):
        engine(script).solve(problem(), 4000, "mrt", patience=0)
