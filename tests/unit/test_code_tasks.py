"""Code problems on the fakes: program extraction, public tests from docstrings, the execution
scorer, PlanSearch's stages and budget, adaptive best-of-N, and correctness judged by hidden tests."""
from __future__ import annotations

import random

import pytest

from strategies.plan_search import PlanSearch, parse_observations
from ttc.core.budget import Budget
from ttc.core.code import extract_program
from ttc.core.errors import BudgetError
from ttc.core.registry import build
from ttc.engine import Engine
from ttc.evaluation.code_tasks import code_problem, docstring_examples, public_tests
from workers.fake import FakeGenerator

STUB = '''from typing import List


def add(a: int, b: int) -> int:
    """Add two numbers.
    >>> add(2, 3)
    5
    >>> add(-1, 1)
    0
    """
'''
HIDDEN = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(10, -4) == 6\n    assert candidate(0, 0) == 0\n"
GOOD = "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```"
PUBLIC_ONLY = "```python\ndef add(a, b):\n    return {(2, 3): 5, (-1, 1): 0}.get((a, b), 0)\n```"  # overfits the examples
BAD = "```python\ndef add(a, b):\n    return a - b\n```"


def problem():
    return code_problem("T/0", STUB, "add", HIDDEN)


# ----------------------------------------------------------------------------- problems and programs
def test_public_tests_come_from_the_docstring_examples():
    assert docstring_examples(STUB, "add") == [("add(2, 3)", 5), ("add(-1, 1)", 0)]
    assert public_tests(STUB, "add") == "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
    prose = 'def f(x):\n    """Double.\n    f(2) ➞ 4\n    f(a) => 2\n    f(1.5) == 3.0\n    """\n'
    assert docstring_examples(prose, "f") == [("f(2)", 4), ("f(1.5)", 3.0)]  # f(a): a name, not a value
    assert "abs(candidate(1.5) - 3.0) < 1e-6" in public_tests(prose, "f")
    assert public_tests('def g():\n    """No examples."""\n', "g") is None


def test_the_program_is_the_stub_then_the_code():
    p = problem()
    program = extract_program("Here you go:\n" + GOOD + "\nDone.", p)
    assert program.startswith("from typing import List") and program.rstrip().endswith("return a + b")
    # unfenced code that defines the function, and a bare body that continues the stub
    assert "return a + b" in extract_program("def add(a, b):\n    return a + b\n", p)
    assert extract_program("    return a + b\n", p) == STUB + "    return a + b\n"
    assert extract_program("I cannot do that.", p) is None
    assert extract_program("```python\ndef add(a, b) return\n```", p) is None  # does not parse


def test_unfenced_code_keeps_its_imports_and_drops_trailing_prose():
    text = "Sure:\nimport math\n\ndef add(a, b):\n    return math.floor(a) + b\n\nThis works because it adds."
    program = extract_program(text, problem())
    assert "import math\n\ndef add(a, b):" in program and "This works" not in program


def test_a_method_named_like_the_entry_point_is_not_it():
    text = "```python\nclass Adder:\n    def add(self, a, b):\n        return a + b\n```"
    program = extract_program(text, problem())  # read as a continuation of the stub: its add stays the stub's
    assert program is None or "\ndef add(" not in program[len(STUB):]


def test_programs_agree_only_line_for_line():
    from ttc.core.answers import answers_match

    a = "def f(x):\n    if x:\n        return 1\n    return 2\n"
    b = "def f(x):\n    if x:\n        return 1\n        return 2\n"  # same tokens, other indentation
    assert answers_match(a, a.replace("\n", "  \n") + "\n\n") and not answers_match(a, b)


def test_arrow_examples_become_public_tests():
    stub = 'def g(x):\n    """Examples:\n    g(3) ==> True\n    g(4) ==> False\n    """\n'
    assert docstring_examples(stub, "g") == [("g(3)", True), ("g(4)", False)]


def test_the_search_never_sees_the_hidden_tests():
    p = problem()
    p.metadata["test"] = "def check(candidate):\n    assert False\n"  # hidden tests nobody passes
    with Engine(generator=scripted([GOOD, BAD]), verifier="code_exec") as engine:
        solution = engine.solve(p, 2000, "best_of_n", n=6, max_tokens=64, selection="verifier")
    # the search chose by the public tests (a pass rate of 1); the hidden ones judged every candidate wrong
    assert solution.best.step_scores[-1] == 1.0 and not any(c.correct for c in solution.candidates)


def test_the_last_fenced_block_that_defines_the_function_wins():
    text = "```python\ndef helper():\n    pass\n```\n" + BAD + "\nbetter:\n" + GOOD
    assert "return a + b" in extract_program(text, problem())


# ----------------------------------------------------------------------------- execution scorer
def scripted(texts):
    """A fake policy that answers with the given completions in turn (by sample)."""
    def script(prompt, rng: random.Random):
        return texts[rng.randrange(len(texts))]
    return FakeGenerator(script, seed=1)


async def test_code_exec_scores_public_pass_rate_and_never_reads_hidden_tests():
    from ttc.core.types import Trajectory

    scorer = build("verifier", "code_exec", {"sandbox": {"timeout_s": 3}})
    p = problem()
    p.metadata["test"] = "def check(candidate):\n    raise RuntimeError('hidden tests were read')\n"
    trajectories = [Trajectory(steps=[t], num_tokens=9, finish_reason="stop", answer=extract_program(t, p))
                    for t in (GOOD, BAD, "no code")]
    result = await scorer.score(p, trajectories)
    assert [row[-1] for row in result.step_scores] == [1.0, 0.0, 0.0]
    assert result.verifier_tokens == 0


def test_engine_judges_code_candidates_by_hidden_tests():
    with Engine(generator=scripted([GOOD, PUBLIC_ONLY, BAD]), verifier="code_exec") as engine:
        solution = engine.solve(problem(), 4000, "best_of_n", n=12, max_tokens=64, selection="verifier")
    by_kind = {}
    for c in solution.candidates:
        kind = "good" if "a + b" in c.answer else "overfit" if ".get(" in c.answer else "bad"
        by_kind.setdefault(kind, set()).add(c.correct)
    assert by_kind["good"] == {True} and by_kind["bad"] == {False} and by_kind["overfit"] == {False}
    assert solution.best.step_scores[-1] == 1.0  # public tests passed (good, or the overfit one)


def test_adaptive_best_of_n_stops_at_the_first_passing_round():
    with Engine(generator=scripted([GOOD]), verifier="code_exec") as engine:
        easy = engine.solve(problem(), 4000, "best_of_n", n=16, max_tokens=64, selection="verifier",
                            stop_at_score=1.0, round_size=2)
    assert len(easy.candidates) == 2 and easy.correct
    with Engine(generator=scripted([BAD]), verifier="code_exec") as engine:
        hard = engine.solve(problem(), 4000, "best_of_n", n=8, max_tokens=64, selection="verifier",
                            stop_at_score=1.0, round_size=2)
    assert len(hard.candidates) == 8 and not hard.correct
    assert hard.usage.generated_tokens > easy.usage.generated_tokens


# ----------------------------------------------------------------------------- PlanSearch
def plan_script(prompt, rng):
    if "List 4 short" in prompt:
        return "Observations:\n- numbers add\n- order does not matter\n- zero is neutral\n"
    if "deeper" in prompt:
        return "Adding is commutative with zero as identity."
    if "Suppose this idea is wrong" in prompt:
        return "Subtract the negation of b from a."
    if "plain words" in prompt:
        return "Return the sum of the two numbers."
    if "pseudocode that implements" in prompt:
        return "1. compute a plus b\n2. return it"
    if "Now write the Python function" in prompt:
        return GOOD if rng.random() < 0.5 else BAD
    raise AssertionError(f"unexpected stage prompt: {prompt[:80]}")


def test_plan_search_runs_its_stages_in_order_within_the_budget():
    gen = FakeGenerator(plan_script, seed=3)
    budget = 6000
    with Engine(generator=gen, verifier="code_exec") as engine:
        solution = engine.solve(problem(), budget, "plan_search", max_tokens=64, observation_tokens=64,
                                second_order_tokens=32, sketch_tokens=32, pseudocode_tokens=32)
    stages = [e["stage"] for e in solution.trace if e.get("event") == "stage"]
    assert stages[:6] == ["observations", "second_order", "sketch", "negate", "pseudocode", "code"]
    plans = next(e for e in solution.trace if e.get("event") == "plans")
    # 3 observations: 3 singletons and 3 pairs; each plan has a sketch and its negation -> 12 pseudocodes,
    # one program each; the budget left then buys up to 7 more programs per pseudocode (max_code_samples 8)
    assert plans["observations"] == 3 and plans["subsets"] == 6 and plans["programs"] == 12 * 8
    assert stages[6:] == ["code"]
    assert solution.usage.generated_tokens <= budget
    assert solution.correct and solution.best.step_scores[-1] == 1.0
    assert len(solution.metrics["sketches"]) == 12 and solution.metrics["passing_public"] >= 1
    assert solution.metrics["coverage"] and solution.metrics["correct_samples"] >= 1  # judged by the hidden tests
    # every stage was one batch: one generate call per stage, all its requests together
    assert len(gen.calls) == len(stages)


def test_plan_search_sizes_its_plans_by_the_budget():
    small = PlanSearch(PlanSearch.Config(max_tokens=64, observation_tokens=64, second_order_tokens=32,
                                         sketch_tokens=32, pseudocode_tokens=32))
    one_plan = 64 + small.plan_cost(second_order=False)
    with Engine(generator=FakeGenerator(plan_script, seed=3), verifier="code_exec") as engine:
        solution = engine.solve(problem(), one_plan, small)
    plans = next(e for e in solution.trace if e.get("event") == "plans")
    assert plans["subsets"] == 1 and solution.usage.generated_tokens <= one_plan
    with pytest.raises(BudgetError, match="cannot pay for one plan"):
        small.check(Budget(generated_tokens=one_plan - 1), has_scorer=True)


def test_observations_are_parsed_from_bullets_or_lines():
    assert parse_observations("Sure!\n1. a\n2) b\n- c\n* a\n", 10) == ["a", "b", "c"]
    assert parse_observations("first idea\n\nsecond idea", 1) == ["first idea"]
    assert parse_observations("", 3) == []
