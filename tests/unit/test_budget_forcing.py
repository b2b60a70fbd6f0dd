"""Budget forcing (s1) on the fakes: the continuation word appended when thinking ends early, the
answer forced at the cap and never missing, the budget never exceeded."""
from __future__ import annotations

import random

import pytest

from ttc.core.errors import ConfigError
from ttc.core.types import Problem
from ttc.engine import Engine
from ttc.testing import FakeGenerator, thinking_script

# Right (42) only after two episodes of thinking; one episode, then the model stops by itself.
SHORT_THINKER = thinking_script([{"7": 1.0}, {"7": 1.0}, {"42": 1.0}], words_per_episode=6)
ONE_EPISODE = thinking_script([{"7": 1.0}, {"7": 1.0}], words_per_episode=6)


def engine(script=SHORT_THINKER, seed=0):
    return Engine(backend="fake", generator=FakeGenerator(script, seed=seed))


def problem():
    return Problem("What is 6 x 7?", reference="42")


def test_thinking_that_ends_early_is_continued_with_words_in_rotation():
    forcing = {"min_thinking_tokens": 30, "max_thinking_tokens": 100, "answer_tokens": 4}
    s = engine(ONE_EPISODE).solve(problem(), None, "repeated_sampling", n=1, budget_forcing=forcing)
    text = s.candidates[0].text
    # 6 words, then the model stops; each continuation adds ~7: Wait, But wait, Alternatively, Hmm ...
    assert "\n\nWait" in text and "\n\nBut wait" in text and "\n\nAlternatively" in text
    extended = [e for e in s.trace if e["event"] == "budget_forcing_continue"]
    assert extended and extended[-1]["thinking_tokens"] < 30 <= s.candidates[0].num_tokens
    assert s.candidates[0].answer is not None


def test_the_answer_is_forced_at_the_cap():
    forcing = {"max_thinking_tokens": 5, "answer_tokens": 4}
    s = engine().solve(problem(), None, "repeated_sampling", n=3, budget_forcing=forcing)
    for c in s.candidates:
        assert c.text.endswith(("Final Answer: 7", "Final Answer: 42")) and c.finish_reason == "length"
        # the forced answer is the sample's, not a number in its thinking; after 1 episode it is 7
        assert c.answer == "7" and c.correct is False and c.num_tokens <= 5 + 4


def test_a_model_with_an_end_of_thinking_answers_after_it():
    def script(prompt, rng):
        tail = prompt.rpartition("[assistant]\n")[2]
        if tail.endswith("</think>"):
            return " So the answer is \\boxed{42}."
        return "think think think</think> early answer 3"

    forcing = {"min_thinking_tokens": 8, "max_thinking_tokens": 50, "think_end": "</think>", "answer_tokens": 10}
    s = engine(script).solve(problem(), None, "repeated_sampling", n=1, budget_forcing=forcing)
    text = s.candidates[0].text
    assert text.count("</think>") == 1 and "\n\nWait" in text and "early answer" not in text
    assert text.endswith("</think> So the answer is \\boxed{42}.") and s.candidates[0].correct


def test_max_tokens_bounds_thinking_and_answer_together():
    from strategies.best_of_n import BestOfNConfig

    c = BestOfNConfig(max_tokens=64, budget_forcing={"answer_tokens": 8})
    assert (c.budget_forcing.max_thinking_tokens, c.sample_tokens()) == (56, 64)
    c = BestOfNConfig(budget_forcing={"max_thinking_tokens": 100, "answer_tokens": 8})  # max_tokens follows
    assert (c.max_tokens, c.sample_tokens()) == (108, 108)
    s = engine().solve(problem(), 200, "best_of_n", max_tokens=50, budget_forcing={"answer_tokens": 4})
    assert s.metrics["samples_requested"] == 4 and all(c.num_tokens <= 50 for c in s.candidates)


@pytest.mark.parametrize("seed", range(40))
def test_never_over_budget_and_never_without_an_answer(seed):
    rng = random.Random(seed)
    forcing = {"min_thinking_tokens": rng.randrange(0, 40), "answer_tokens": rng.randrange(1, 8)}
    forcing["max_thinking_tokens"] = forcing["min_thinking_tokens"] + rng.randrange(1, 60)
    per_sample = forcing["max_thinking_tokens"] + forcing["answer_tokens"]
    budget = rng.randrange(per_sample, 6 * per_sample)
    n = rng.choice([None, 1, 3])
    s = engine(seed=seed).solve(problem(), budget, "best_of_n", n=n, budget_forcing=forcing)
    assert 0 < s.usage.generated_tokens <= budget
    assert s.candidates and all(c.answer is not None for c in s.candidates)
    assert sum(c.num_tokens for c in s.candidates) == s.usage.generated_tokens  # every token is a sample's


def test_bad_options_are_clear_errors():
    with pytest.raises(ConfigError, match="min_thinking_tokens=50 exceeds max_thinking_tokens=10"):
        engine().solve(problem(), 1000, "repeated_sampling", budget_forcing={"min_thinking_tokens": 50,
                                                                              "max_thinking_tokens": 10})
    with pytest.raises(ConfigError, match=r"max_thinking_tokens=100 \+ answer_tokens=32 exceed max_tokens=64"):
        engine().solve(problem(), 1000, "best_of_n", max_tokens=64, budget_forcing={"max_thinking_tokens": 100})
    with pytest.raises(ConfigError, match="max_tokens=16 leaves no thinking"):
        engine().solve(problem(), 1000, "best_of_n", max_tokens=16, budget_forcing={})
    with pytest.raises(ConfigError, match="stop_at_score"):
        engine().solve(problem(), 1000, "best_of_n", stop_at_score=1.0, budget_forcing={}, verifier="oracle")


def test_more_samples_than_answers_the_budget_pays_for_are_not_drawn():
    forcing = {"max_thinking_tokens": 10, "answer_tokens": 8}
    s = engine().solve(problem(), 20, "repeated_sampling", n=4, budget_forcing=forcing)
    assert len(s.candidates) == 2 and all(c.text.endswith("Final Answer: 7") for c in s.candidates)
    assert s.usage.generated_tokens <= 20
    assert any(e["event"] == "budget_forcing_fewer_samples" for e in s.trace)
