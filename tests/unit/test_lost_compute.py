"""Compute the backends lose (retries, dead replicas, failed batches) is reported, and a failed
request's siblings are cancelled rather than left running; checked without a model or a cluster."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ttc.core.budget import Budget, Ledger
from ttc.core.context import SearchContext
from ttc.core.errors import BackendError
from ttc.core.types import GenerationRequest, Problem, SamplingParams
from ttc.testing import FakeGenerator
from workers.openai_http import OpenAIHTTPConfig, OpenAIHTTPGenerator


def req(prompt: str, n: int = 1, max_tokens: int = 8, affinity: str | None = None) -> GenerationRequest:
    return GenerationRequest(prompt, SamplingParams(n=n, max_tokens=max_tokens), affinity)


# ---- in-process vLLM: a failed request aborts its siblings -----------------------------------------

def vllm_generator_over(fake: FakeGenerator):
    """A VLLMGenerator whose per-request engine call is the fake's, so `generate`'s own logic is tested."""
    from workers.vllm_local import VLLMGenerator

    gen = VLLMGenerator.__new__(VLLMGenerator)
    gen._engine, gen.dead = object(), False  # started: nothing to load

    async def one(r):
        (result,) = await fake.generate([r])
        return result

    gen._one = one
    return gen


async def test_vllm_a_failed_request_cancels_its_siblings():
    fake = FakeGenerator(latency_s=30, fail_on_prompt="bad", fail_after_s=0.02)
    gen = vllm_generator_over(fake)
    with pytest.raises(BackendError, match="bad"):
        await asyncio.wait_for(gen.generate([req("one"), req("bad"), req("two")]), 5)
    assert fake.cancelled == 2  # cancelled (AsyncLLM aborts a cancelled request), not left to run on


async def test_vllm_siblings_still_answer_when_nothing_fails():
    gen = vllm_generator_over(FakeGenerator(latency_s=0.01))
    results = await gen.generate([req("one", n=2), req("two")])
    assert [len(r.completions) for r in results] == [2, 1]


# ---- the search context charges what the backend says it lost ---------------------------------------

def http_generator(handler) -> OpenAIHTTPGenerator:
    return OpenAIHTTPGenerator(OpenAIHTTPConfig(base_url="http://mock.invalid/v1", model="m", backoff_s=0.001),
                               transport=httpx.MockTransport(handler))


def ok(n: int = 1):
    return httpx.Response(200, json={"choices": [{"index": i, "text": "x", "finish_reason": "stop",
                                                  "logprobs": {"tokens": ["x"], "token_logprobs": [-0.1]}}
                                                 for i in range(n)],
                                     "usage": {"prompt_tokens": 3}})


async def test_usage_reports_http_retries_once_and_charges_only_the_answer():
    calls = 0

    def handler(request):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return ok(2)

    gen = http_generator(handler)
    ledger = Ledger(Budget(generated_tokens=1000))
    ctx = SearchContext(Problem("q"), "", gen, ledger)
    await ctx.generate([req("the prompt", n=2, max_tokens=8)])
    u = ledger.usage
    assert (u.requests, u.generated_tokens, u.prompt_tokens) == (1, 2, 2 * 3)  # the prompt once per sequence
    assert u.lost_requests == 1 and u.lost_tokens == gen.count_tokens("the prompt") + 2 * 8


async def test_usage_reports_a_failed_batch_and_its_retries():
    def handler(request):
        prompt = json.loads(request.content)["prompt"]
        return httpx.Response(503, json={"message": "down"}) if prompt == "bad" else ok()

    gen = http_generator(handler)
    gen.config.max_retries = 1
    ledger = Ledger(Budget(generated_tokens=1000))
    ctx = SearchContext(Problem("q"), "", gen, ledger)
    with pytest.raises(BackendError):
        await ctx.generate([req("good", max_tokens=8), req("bad", max_tokens=8)])
    u = ledger.usage
    # Both requests' reservations (the good one's answer is discarded with the batch), plus the bad
    # one's retried attempt; nothing charged as spent.
    assert u.lost_requests == 2 + 1 and u.generated_tokens == 0 and u.requests == 0
    assert u.lost_tokens == 8 + 8 + (gen.count_tokens("bad") + 8)


# ---- Ray pool: retried attempts reported on the results (stub replicas, no cluster) -----------------

class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return asyncio.ensure_future(self.fn(*args))


class StubReplica:
    """A replica handle whose `generate` answers with scripted outcomes, then with a fake generator."""

    def __init__(self, outcomes=(), delay_s: float = 0.0):
        self.outcomes = list(outcomes)
        self.delay_s = delay_s
        self.fake = FakeGenerator()
        self.generate = _Method(self._generate)

    async def _generate(self, requests, keys=()):
        if self.outcomes:
            await asyncio.sleep(self.delay_s)
            return self.outcomes.pop(0)
        return await self.fake.generate(requests)


async def stub_pool(*replicas, max_attempts=3):
    pytest.importorskip("ray")
    from workers.cluster import ClusterConfig, ReplicaPoolConfig
    from workers.ray_pool import RayGeneratorPool

    cluster = ClusterConfig(address="local", max_attempts=max_attempts,
                            generator=ReplicaPoolConfig(replicas=len(replicas)))
    pool = RayGeneratorPool("fake", {}, cluster)

    async def started():
        return None

    pool.replicas.astart = started
    pool.replicas._kill = lambda actor: None
    for r in replicas:
        await pool.replicas.router.add(r)
    return pool


async def test_ray_pool_reports_a_dead_replicas_attempt_on_the_retried_results():
    from workers.ray_host import Failure

    dying = StubReplica([Failure("engine died", retryable=False, dead=True)])
    pool = await stub_pool(dying, StubReplica())
    batch = [req("p q", n=2, max_tokens=8, affinity="a"), req("p r", n=1, max_tokens=5, affinity="a")]
    results = await pool.generate(batch)
    assert [r.lost_requests for r in results] == [1, 1]
    assert [r.lost_tokens for r in results] == [2 * 8, 1 * 5]  # n x max_tokens; the prompt is not known here
    assert pool.replicas.counters["replaced"] == 1 and pool.replicas.counters["retries"] == 1


async def test_ray_pool_adds_what_a_worker_reported_lost_before_it_failed():
    from workers.ray_host import Failure

    flaky = Failure("BackendError: HTTP 503", retryable=True, dead=False, lost_requests=2, lost_tokens=40)
    pool = await stub_pool(StubReplica([flaky]))
    (result,) = await pool.generate([req("p", max_tokens=8)])
    assert (result.lost_requests, result.lost_tokens) == (1 + 2, 8 + 40)


async def test_ray_pool_gives_up_with_the_lost_attempts_on_its_error():
    from workers.ray_host import Failure

    def dead():
        return Failure("gone", retryable=False, dead=True)

    pool = await stub_pool(StubReplica([dead()]), StubReplica([dead()]), StubReplica([dead()]), max_attempts=3)
    with pytest.raises(BackendError, match="failed on 3 replicas") as ei:
        await pool.generate([req("p", n=2, max_tokens=8, affinity="a"), req("q", max_tokens=4, affinity="a")])
    # Three attempts of a two-request batch lost; the last one is the caller's to count.
    assert ei.value.lost_requests == 2 * 2 and ei.value.lost_tokens == 2 * (16 + 4)


async def test_ray_pool_a_failed_group_cancels_the_others_and_reports_their_retries():
    from workers.ray_host import Failure

    slow = StubReplica([Failure("busy", retryable=True, dead=False)])
    slow.fake.latency_s = 30
    bad = StubReplica([Failure("bad request", retryable=False, dead=False)], delay_s=0.05)
    pool = await stub_pool(slow, bad)
    pool.replicas.router.pick = _route({"slow": slow, "bad": bad}, pool.replicas.router)
    with pytest.raises(BackendError, match="bad request") as ei:
        await asyncio.wait_for(pool.generate([req("s", max_tokens=8, affinity="slow"),
                                              req("b", max_tokens=4, affinity="bad")]), 5)
    assert slow.fake.cancelled == 1  # the sibling group's retry was stopped, not left running
    assert (ei.value.lost_requests, ei.value.lost_tokens) == (1, 8)  # the slow group's first attempt


def _route(by_prompt_key, router):
    """Send each affinity group to a chosen stub replica (the router's own choice is load-based)."""
    from workers.routing import affinity_key

    handles = {affinity_key(k): h for k, h in by_prompt_key.items()}

    def pick(key, weight=1):
        return next(r for r in router.replicas if r.handle is handles[key])

    return pick


# ---- scoring: lost attempts reach usage as generation's do ------------------------------------------

async def test_ray_scorer_pool_reports_a_dead_replicas_scoring_attempt():
    pytest.importorskip("ray")
    from ttc.core.types import Trajectory
    from ttc.testing import FakeScorer
    from workers.cluster import ClusterConfig, ReplicaPoolConfig
    from workers.ray_host import Failure
    from workers.ray_pool import RayScorerPool

    class ScoringReplica:
        def __init__(self, outcomes=()):
            self.outcomes, self.scorer = list(outcomes), FakeScorer({}, tokens_per_step=5)
            self.score = _Method(self._score)

        async def _score(self, problem, trajectories):
            return self.outcomes.pop(0) if self.outcomes else await self.scorer.score(problem, trajectories)

    pool = RayScorerPool("fake", {}, ClusterConfig(address="local", scorer=ReplicaPoolConfig(replicas=2)))

    async def started():
        return None

    pool.replicas.astart, pool.replicas._kill = started, (lambda actor: None)
    for r in (ScoringReplica([Failure("engine died", retryable=False, dead=True)]), ScoringReplica()):
        await pool.replicas.router.add(r)
    ledger = Ledger(Budget(generated_tokens=100))
    ctx = SearchContext(Problem("q"), "", FakeGenerator(), ledger, pool)
    await ctx.score([Trajectory(["a\n\n", "b"], 2, "stop", answer="1")])
    u = ledger.usage
    # The dead replica's attempt did the same work as the one that answered: one request, 10 tokens.
    assert (u.verifier_tokens, u.lost_requests, u.lost_tokens) == (10, 1, 10)


async def test_a_failed_score_reports_what_its_backend_lost_retrying():
    from ttc.core.plugins import Scorer
    from ttc.core.types import Trajectory

    class Failing(Scorer):
        async def score(self, problem, trajectories):
            raise BackendError("PRM server gone", retryable=False, lost_requests=2, lost_tokens=30)

    ledger = Ledger(Budget(generated_tokens=100))
    ctx = SearchContext(Problem("q"), "", FakeGenerator(), ledger, Failing())
    with pytest.raises(BackendError):
        await ctx.score([Trajectory(["a"], 1, "stop", answer="1")])
    assert (ledger.usage.lost_requests, ledger.usage.lost_tokens) == (3, 30)  # its retries, and the failed call
