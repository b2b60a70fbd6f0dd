import pytest

from ttc.core.errors import BackendError
from ttc.testing import FakeGenerator, FakeScorer, answer_script
from ttc.core.types import GenerationRequest, Problem, SamplingParams, Trajectory


async def test_fake_honours_n_max_tokens_and_stop():
    gen = FakeGenerator(answer_script({"5": 1.0}, steps=3, words_per_step=6))
    (full, cut, stopped) = await gen.generate([
        GenerationRequest("p", SamplingParams(n=3, max_tokens=1000)),
        GenerationRequest("p", SamplingParams(n=1, max_tokens=4)),
        GenerationRequest("p", SamplingParams(n=1, max_tokens=1000, stop=("\n\n",))),
    ])
    assert len(full.completions) == 3
    assert all(c.finish_reason == "stop" and c.text.endswith("\\boxed{5}") for c in full.completions)
    assert all(c.num_tokens == 3 * 6 + 4 for c in full.completions)
    assert cut.completions[0].num_tokens == 4 and cut.completions[0].finish_reason == "length"
    s = stopped.completions[0]
    assert s.text.endswith("\n\n") and s.text.count("\n\n") == 1 and s.num_tokens == 6


async def test_fake_is_deterministic_by_seed_and_fresh_on_repeat():
    req = [GenerationRequest("p", SamplingParams(n=4, logprobs=0))]
    a1 = await FakeGenerator(seed=1).generate(req)
    b1 = await FakeGenerator(seed=1).generate(req)
    c1 = await FakeGenerator(seed=2).generate(req)
    texts = lambda r: [c.text for c in r[0].completions]
    assert texts(a1) == texts(b1) != texts(c1)
    gen = FakeGenerator(seed=1)
    first, second = await gen.generate(req), await gen.generate(req)
    assert texts(first) != texts(second)  # asking again samples again
    assert len(a1[0].completions[0].token_logprobs) == a1[0].completions[0].num_tokens


async def test_fake_counts_cached_prefix_and_fails_on_request():
    gen = FakeGenerator(fail_on_call=2)
    (r1,) = await gen.generate([GenerationRequest("a b c d", SamplingParams())])
    assert (r1.prompt_tokens, r1.cached_prompt_tokens) == (4, 0)
    with pytest.raises(BackendError):
        await gen.generate([GenerationRequest("a b c e", SamplingParams())])
    (r3,) = await gen.generate([GenerationRequest("a b c e", SamplingParams())])
    assert r3.cached_prompt_tokens == 3
    (r4,) = await gen.generate([GenerationRequest("a b c f g", SamplingParams(n=3))])
    assert (r4.prompt_tokens, r4.cached_prompt_tokens) == (3 * 5, 3 * 3)  # once per sequence, as vLLM computes it


async def test_fake_scorer_scores_every_step_and_charges_tokens():
    scorer = FakeScorer({"1": 0.9}, tokens_per_step=5)
    ts = [Trajectory(["a\n\n", "b"], 3, "stop", answer="1"), Trajectory(["c"], 1, "stop", answer="2")]
    res = await scorer.score(Problem("p"), ts)
    assert res.step_scores == [[0.9, 0.9], [0.5]] and res.verifier_tokens == 15


async def test_fake_fails_on_a_prompt_after_a_delay_and_counts_cancelled_calls():
    import asyncio

    gen = FakeGenerator(latency_s=30, fail_on_prompt="bad", fail_after_s=0.02)
    slow = asyncio.ensure_future(gen.generate([GenerationRequest("good", SamplingParams())]))
    with pytest.raises(BackendError, match="bad") as ei:
        await asyncio.wait_for(gen.generate([GenerationRequest("a bad one", SamplingParams())]), 5)
    assert not ei.value.retryable and not slow.done()  # it failed while its sibling was still running
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert gen.cancelled == 1
