"""Code tasks on the embedded model: a HumanEval task through best-of-N by execution and PlanSearch.

Asserts structure (stages, budgets, verdicts from the hidden tests), never the tiny model's skill.
"""
import pytest

from ttc.core.code import extract_program
from ttc.evaluation.datasets import load_problems

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def task():
    return load_problems({"source": "humaneval", "limit": 1})[0]  # has_close_elements, with public tests


def test_best_of_n_by_execution_on_humaneval(real_engine, task):
    sol = real_engine.solve(task, 4 * 192, "best_of_n", verifier="code_exec", n=4, max_tokens=192,
                            selection="verifier")
    assert len(sol.candidates) == 4 and sol.usage.generated_tokens <= 4 * 192
    for c in sol.candidates:
        assert c.answer == extract_program(c.text, task)
        assert isinstance(c.correct, bool)  # judged by the hidden tests, every candidate
        assert c.answer or c.correct is False
        assert 0.0 <= c.step_scores[-1] <= 1.0
    assert sol.best.step_scores[-1] == max(c.step_scores[-1] for c in sol.candidates)


def test_plan_search_on_humaneval(real_engine, task):
    budget = 64 + 2 * (48 + 64 + 192) + 2 * (32 + 2 * (48 + 64 + 192))
    sol = real_engine.solve(task, budget, "plan_search", verifier="code_exec", max_tokens=192, observation_tokens=64,
                            second_order_tokens=32, sketch_tokens=48, pseudocode_tokens=64, observations=3)
    stages = [e["stage"] for e in sol.trace if e.get("event") == "stage"]
    assert stages[0] == "observations" and stages[-1] == "code"
    assert sol.usage.generated_tokens <= budget
    assert sol.candidates and all(isinstance(c.correct, bool) for c in sol.candidates)
