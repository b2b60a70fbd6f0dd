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


def test_consensus_is_over_every_trace():
    from strategies.mrt import MRT, _Boundary, _Trace

    a, b = _Trace(), _Trace()
    a.boundaries = [_Boundary(0, ["7", "7", "7"])]
    b.boundaries = [_Boundary(0, ["42", "42"]), _Boundary(5, ["42", "42"])]
    MRT()._estimate([a, b])  # 42 (4 votes) is the consensus, though trace a alone says 7
    assert [x.j for x in a.boundaries] == [0.0] and [x.j for x in b.boundaries] == [1.0, 1.0]


def test_grouped_and_spaced_boundaries():
    script = thinking_script([{"42": 1.0}] * 7, words_per_episode=4)
    s = engine(script).solve(problem(), 4000, "mrt", episodes={"min_chars": 0, "group_size": 2}, patience=9)
    assert s.metrics["episodes"] == [6] and len(s.metrics["j"][0]) == 1 + 3  # before thinking, then every 2 episodes
    s = engine(script).solve(problem(), 4000, "mrt", episodes={"min_chars": 10_000}, patience=9)
    assert s.metrics["episodes"] == [6] and len(s.metrics["j"][0]) == 2  # before thinking and at its end only


def delimited(thinking: str, summary: str, continuation: str | None = None):
    """A script of a model that thinks between <think> and </think>, then writes `summary`; forced to
    answer, it says 42."""
    def script(prompt, rng):
        tail = prompt.rpartition("[assistant]\n")[2]
        if "Final Answer:" in tail:
            return " 42"
        if tail.endswith("</think>"):
            return summary
        if continuation is not None and tail.endswith("Wait"):
            return continuation
        return thinking

    return script


def test_thinking_delimiters_close_the_thinking_before_any_answer():
    script = delimited("<think>t1 t2 t3\n\nWait, t4 t5 t6</think>", " Summing up, the answer is \\boxed{42}.",
                       ", t4 t5 t6</think>")
    gen = FakeGenerator(script)
    thinking = {"think_start": "<think>", "think_end": "</think>", "answer_tokens": 4}
    s = Engine(backend="fake", generator=gen).solve(problem(), 2000, "mrt", episodes=EPISODES, thinking=thinking,
                                                    final_answer_tokens=20)
    forced = [r.prompt for call in gen.calls for r in call if "Time is up" in r.prompt]
    assert forced and all("</think>\n\nTime is up" in p for p in forced)  # closed, then cut off
    text = s.candidates[0].text
    assert text.count("</think>") == 1 and text.endswith("</think> Summing up, the answer is \\boxed{42}.")
    assert s.metrics["ends"] == ["ended"] and s.candidates[0].answer == "42"


def test_a_user_stop_string_ends_the_trace_and_a_boxed_guess_does_not_answer_for_it():
    def script(prompt, rng):
        tail = prompt.rpartition("[assistant]\n")[2]
        if "Final Answer:" in tail:
            return " 42"
        return "guess \\boxed{7} for now t1 t2\n\nQuestion: what next"

    s = engine(script).solve(problem(), 2000, "mrt", episodes=EPISODES, stop=["\n\nQuestion:"], forced_answers=3)
    m = s.metrics
    assert m["ends"] == ["ended"] and m["extensions"] == [0] and "what next" not in s.candidates[0].text
    # the forced answers were sampled (and charged), not read off the boxed guess
    assert m["forced_answer_tokens"] == m["forced_answers"] == 6 and m["forced_correct"] == [[3, 3]]


def test_progress_by_a_scorer_that_needs_logprobs():
    from verifiers.logprob import MeanLogprobScorer

    script = thinking_script([{"7": 1.0}, {"42": 1.0}, {"42": 1.0}])
    s = engine(script, scorer=MeanLogprobScorer()).solve(problem(), 4000, "mrt", episodes=EPISODES,
                                                         progress="scorer")
    assert all(0.0 < j <= 1.0 for j in s.metrics["j"][0])


def test_no_marker_is_left_dangling_at_the_episode_limit():
    script = thinking_script([{"42": 1.0}] * 7)
    s = engine(script).solve(problem(), 4000, "mrt", episodes=EPISODES, max_episodes=2, patience=5)
    assert s.metrics["ends"] == ["capped"] and "\n\nWait\n\nTime is up" not in s.candidates[0].text


def test_a_final_answer_section_without_an_answer_gives_none_not_a_guess_from_the_thinking():
    script = delimited("<think>guess \\boxed{13} t2 t3</think>", " Summing up the work above, the answer is \\boxed{42}.")
    thinking = {"think_end": "</think>", "answer_tokens": 4}
    s = engine(script).solve(problem(), 2000, "mrt", episodes=EPISODES, thinking=thinking)  # the summary is cut
    assert s.candidates[0].answer is None and s.answer == "42"  # the vote of the forced answers
