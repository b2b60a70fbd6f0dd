"""MRT and budget forcing end to end on the embedded model: the mechanics on a real backend (stop
strings at episode markers, forced answers through the prefix cache, the caps), not accuracy."""
import pytest

pytestmark = pytest.mark.integration


def test_mrt_on_the_real_model(real_engine):
    budget = 600
    sol = real_engine.solve("What is 17 + 25?", budget, "mrt", reference="42", max_tokens=48, forced_answers=3,
                            thinking={"max_thinking_tokens": 300, "answer_tokens": 12}, episodes={"min_chars": 0})
    m = sol.metrics
    assert sol.candidates and sol.usage.generated_tokens <= budget
    assert m["episodes"][0] >= 1 and len(m["j"][0]) >= 1 and m["forced_answers"] == 3 * len(m["j"][0])
    # the thinking, the final answer and every forced answer were charged
    assert sol.usage.generated_tokens == sol.candidates[0].num_tokens + m["forced_answer_tokens"]
    assert sol.usage.cached_prompt_tokens > 0  # forced answers fork the trace's prefix


def test_budget_forcing_on_the_real_model(real_engine):
    forcing = {"min_thinking_tokens": 60, "max_thinking_tokens": 80, "answer_tokens": 12}
    sol = real_engine.solve("What is 3 + 4?", 400, "repeated_sampling", reference="7", n=2, budget_forcing=forcing)
    assert len(sol.candidates) == 2 and sol.usage.generated_tokens <= 400
    for c in sol.candidates:
        # every sample ends with an answer section (the model may still state nothing in it: then no answer)
        assert c.num_tokens <= 80 + 12 and ("\n\nFinal Answer:" in c.text or c.answer is not None)
        # made to think at least 60 tokens: either it did by itself, or continuation words carried it on
        assert c.num_tokens >= 60 or any(w in c.text for w in ("\n\nWait", "\n\nBut wait"))
