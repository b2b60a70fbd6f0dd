"""The engine end to end on the embedded SmolLM2-135M through in-process vLLM.

These assert behaviour (structure, budgets, counts, error handling), never the
tiny model's knowledge.
"""
import pytest

from ttc.core.budget import Budget
from ttc.core.errors import SolveError
from ttc.core.answers import answers_match
from ttc.core.types import Problem

pytestmark = pytest.mark.integration


def test_best_of_n_majority_end_to_end(real_engine):
    sol = real_engine.solve("What is 3 + 4?", 1024, "best_of_n", max_tokens=128, reference="7")
    assert len(sol.candidates) >= 8  # 8 full-length samples fit; short ones leave room for more rounds
    assert sol.usage.generated_tokens == sum(c.num_tokens for c in sol.candidates) <= 1024
    assert sol.usage.prompt_tokens > 0 and sol.usage.flops > 0 and sol.usage.wall_s > 0
    assert all(c.finish_reason in ("stop", "length") for c in sol.candidates)
    assert all(c.num_tokens <= 128 for c in sol.candidates)
    assert all(c.correct == (c.answer is not None and answers_match(c.answer, "7")) for c in sol.candidates)
    votes = sol.metrics["votes"]
    if sol.answer is not None:
        assert votes[sol.answer] == max(votes.values())


def test_repeated_sampling_reports_coverage(real_engine):
    sol = real_engine.solve("What is 2 + 5?", 64 * 16, "repeated_sampling", max_tokens=64, reference="7")
    assert sol.metrics["coverage"] == any(c.correct for c in sol.candidates)
    assert sol.metrics["correct_samples"] == sum(bool(c.correct) for c in sol.candidates)


def test_verifier_selection_with_logprob_confidence(real_engine):
    sol = real_engine.solve("What is 1 + 1?", 64 * 6, "best_of_n", max_tokens=64, selection="verifier")
    scores = [c.step_scores[0] for c in sol.candidates]
    assert all(0.0 < s <= 1.0 for s in scores)
    assert sol.best.step_scores[0] == max(scores)


@pytest.mark.parametrize("budget", [50, 200, Budget(generated_tokens=300, prompt_tokens=200)])
def test_real_backend_never_exceeds_budget(real_engine, budget):
    sol = real_engine.solve("What is 9 + 8?", budget, "best_of_n", max_tokens=50, n=8)
    b = Budget.coerce(budget)
    assert sol.usage.generated_tokens <= b.generated_tokens
    if b.prompt_tokens:
        assert sol.usage.prompt_tokens <= b.prompt_tokens


def test_concurrent_problems_share_the_engine(real_engine):
    problems = [Problem(f"What is {a} + {b}?", id=f"p{a}{b}", reference=str(a + b)) for a, b in [(1, 2), (3, 3), (4, 5), (2, 7)]]
    sols = real_engine.solve_many(problems, 64 * 4, "best_of_n", max_tokens=64, n=4)
    assert [s.problem.id for s in sols] == ["p12", "p33", "p45", "p27"]
    assert all(len(s.candidates) == 4 for s in sols)


def test_rejected_request_is_reported_and_engine_keeps_serving(real_engine):
    too_long = "add these numbers " * 3000  # past max_model_len=2048
    with pytest.raises(SolveError, match="vLLM rejected the request"):
        real_engine.solve(too_long, 64, "best_of_n", max_tokens=64)
    assert len(real_engine.solve("What is 2 + 2?", 64, max_tokens=64, n=1).candidates) == 1


def test_auto_probes_then_decides_on_the_real_model(real_engine):
    sol = real_engine.solve("What is 6 + 2?", 1024, "auto", max_tokens=64, probe_samples=4, reference="8")
    probe = sol.metrics["probe"]
    if sol.metrics["decision"] == "stop_after_probe":  # without an allocator: only a unanimous probe stops
        assert probe["agreement"] == 1.0 and len(sol.candidates) == 4
    else:
        assert sol.metrics["decision"] == "run" and probe["agreement"] < 1.0 and len(sol.candidates) > 4
    assert sol.usage.generated_tokens <= 1024
    assert next(ev for ev in sol.trace if ev["event"] == "probe")["samples"] == 4
