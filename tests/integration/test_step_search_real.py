"""Each step-level search end to end on the embedded model, judged by the model itself.

On SmolLM2-135M, self-evaluation is a weak (even anti-correlated) signal: these
tests prove the mechanics on a real backend — steps, budgets, trace, prefix
caching — not accuracy.
"""
import pytest

pytestmark = pytest.mark.integration

CASES = {
    "beam_search": {"n": 4, "beam_width": 2},
    "dvts": {"n": 4, "beam_width": 2},
    "rebase": {"n": 4},
    "particle_filtering": {"n": 4},
}


@pytest.mark.parametrize("strategy", CASES)
def test_step_search_on_the_real_model(real_engine, strategy):
    budget = 1200
    sol = real_engine.solve("What is 5 + 7?", budget, strategy, reference="12", verifier="self_eval",
                            max_tokens=120, max_step_tokens=40, max_steps=3, **CASES[strategy])
    assert sol.candidates and sol.usage.generated_tokens <= budget
    assert sol.usage.verifier_tokens > 0
    assert all(len(t.steps) <= 3 and len(t.step_scores) == len(t.steps) for t in sol.candidates)
    assert all(0.0 <= s <= 1.0 for t in sol.candidates for s in t.step_scores)
    assert any(ev["event"] == "step" for ev in sol.trace)
    # Continuations resend the prompt and steps so far; vLLM's prefix cache serves part of them.
    # (Unless every first step already ended its trajectory: unseeded CPU sampling makes that rare, not
    # impossible.)
    if any(len(t.steps) > 1 for t in sol.candidates):
        assert sol.usage.requests >= 2 and sol.usage.cached_prompt_tokens > 0
