"""Generator and scorer pools on a local loopback Ray cluster, with fake workers."""
from __future__ import annotations

import asyncio

import pytest

from ttc.engine import Engine
from ttc.core.errors import BackendError, SolveError

pytestmark = pytest.mark.ray

PROMPTS = [f"What is {i} + {i}?" for i in range(12)]


def cluster(**pools):
    return {"address": "local", "generator": {"replicas": 2, "num_cpus": 0.5, **pools.get("generator", {})},
            "scorer": {"replicas": 1, "num_cpus": 0.5, **pools.get("scorer", {})}, "max_attempts": 3}


def charged_once(solutions):
    """What each solve was charged is exactly what its kept samples produced: no retry is charged twice."""
    return all(s.usage.generated_tokens == sum(c.num_tokens for c in s.candidates) for s in solutions)


def test_step_search_keeps_each_problem_on_the_replica_that_holds_its_prefix(local_ray):
    with Engine(backend="fake", verifier="fake", cluster=cluster()) as e:
        sols = e.solve_many(PROMPTS, 2048, "beam_search", max_tokens=64, n=4, beam_width=2)
        assert all(s.answer is not None for s in sols) and charged_once(sols)
        gen = e._generator.stats()
        keys = [set(r["affinity_keys"]) for r in gen["replicas"]]
        assert len(keys) == 2 and all(keys)  # both replicas served problems...
        assert not keys[0] & keys[1]  # ...and no problem's prefix was split between them
        assert len(keys[0] | keys[1]) == len(PROMPTS)
        assert sum(r["affinity_hits"] for r in gen["replicas"]) > 0
        scorer = e._scorer.stats()
        assert scorer["replicas"][0]["calls"] > 0  # the scorer ran on its own pool


def test_backpressure_bounds_requests_in_flight_per_replica(local_ray):
    options = {"latency_s": 0.05}
    with Engine(backend="fake", backend_options=options,
                cluster=cluster(generator={"max_in_flight": 2})) as e:
        sols = e.solve_many(PROMPTS, 1024, "repeated_sampling", max_tokens=64, n=4)
        assert len(sols) == len(PROMPTS) and charged_once(sols)
        peaks = [r["peak_in_flight"] for r in e._generator.stats()["replicas"]]
        assert max(peaks) <= 2 and sum(r["calls"] for r in e._generator.stats()["replicas"]) == len(PROMPTS)


def test_a_replica_that_dies_mid_request_is_replaced_and_its_requests_retried(local_ray, tmp_path):
    # One replica exits (as if killed) on its 3rd generate call; every problem must still be answered,
    # each charged once, and the pool must have replaced exactly one replica.
    options = {"exit_on_call": 3, "exit_token": str(tmp_path / "one-death"), "latency_s": 0.05}
    with Engine(backend="fake", backend_options=options, cluster=cluster()) as e:
        sols = e.solve_many(PROMPTS, 1024, "best_of_n", max_tokens=64, n=4)
        assert [s.problem.prompt for s in sols] == PROMPTS
        assert all(s.answer is not None and len(s.candidates) == 4 for s in sols)
        assert charged_once(sols)
        stats = e._generator.stats()
        assert stats["replaced"] == 1 and stats["retries"] >= 1
        # The dead replica's work is reported as lost on the retried requests' solves, never as spent:
        # one lost request per retried request, up to n x max_tokens each (the prompt is not known).
        lost = [s.usage for s in sols if s.usage.lost_requests]
        # At most one per retry: a retried render_prompt call (no request) counts as a retry too.
        assert lost and 1 <= sum(u.lost_requests for u in lost) <= stats["retries"]
        assert all(0 < u.lost_tokens <= u.lost_requests * 4 * 64 for u in lost)
        assert (tmp_path / "one-death").exists()
        # The replacement comes up and serves: later solves still have two replicas.
        for _ in range(100):
            if len(e._generator.replicas.router.alive()) == 2:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert len(e._generator.replicas.router.alive()) == 2
        assert e.solve("one more", 256, "best_of_n", max_tokens=64, n=2).answer is not None


def test_retries_are_bounded_when_every_replica_dies(local_ray):
    # No token: every replica, replacements included, dies on its first call.
    with Engine(backend="fake", backend_options={"exit_on_call": 1},
                cluster={**cluster(), "max_attempts": 2, "replica_start_timeout_s": 60}) as e:
        with pytest.raises((BackendError, SolveError), match="failed on 2 replicas"):
            e.solve("q", 256, "best_of_n", max_tokens=64, n=2)


def test_a_retryable_backend_error_is_retried_on_a_replica(local_ray):
    with Engine(backend="fake", backend_options={"fail_on_call": 1}, cluster=cluster()) as e:
        sol = e.solve("q", 256, "best_of_n", max_tokens=64, n=2)
        assert sol.answer is not None and charged_once([sol])
        assert e._generator.stats()["retries"] == 1 and e._generator.stats().get("replaced", 0) == 0
        assert sol.usage.lost_requests == 1 and sol.usage.lost_tokens == 2 * 64  # the failed attempt


def test_a_failed_group_cancels_its_siblings_on_their_replicas(local_ray):
    # Two affinity groups of one batch go out as two calls; the bad one fails after 0.2 s while the
    # other is still generating (30 s): the whole batch fails at once and nothing is left running.
    from ttc.core.types import GenerationRequest, SamplingParams
    from workers.cluster import ClusterConfig, ReplicaPoolConfig
    from workers.ray_pool import RayGeneratorPool

    options = {"latency_s": 30, "fail_on_prompt": "bad", "fail_after_s": 0.2}
    pool = RayGeneratorPool("fake", options, ClusterConfig(address="local", generator=ReplicaPoolConfig(
        replicas=2, num_cpus=0.25)))
    batch = [GenerationRequest(p, SamplingParams(max_tokens=8), affinity=p) for p in ("slow", "bad")]

    async def go():
        pool.start()
        await pool.astart()
        with pytest.raises(BackendError, match="bad"):
            await asyncio.wait_for(pool.generate(batch), 20)
        for _ in range(100):  # the cancellation reaches the replicas' event loops shortly after
            if all(r["in_flight"] == 0 for r in pool.stats()["replicas"]):
                break
            await asyncio.sleep(0.1)
        assert [r["in_flight"] for r in pool.stats()["replicas"]] == [0, 0]
        await pool.aclose()
    asyncio.run(go())


def test_a_failed_start_keeps_the_replicas_that_started_and_adds_only_the_missing_one(local_ray, tmp_path):
    from workers.cluster import ClusterConfig, ReplicaPoolConfig
    from workers.ray_pool import ReplicaPool

    options = {"fail_start_token": str(tmp_path / "one-bad-start")}
    pool = ReplicaPool("generator", "fake", options, ReplicaPoolConfig(replicas=3, num_cpus=0.25),
                       ClusterConfig(address="local"))

    async def go():
        with pytest.raises(BackendError, match="failed to start"):
            await pool.astart()
        assert len(pool.router.alive()) == 2  # the two good starts stay, the bad actor is gone
        await pool.astart()
        assert len(pool.router.alive()) == 3  # not 2 + 3
        await pool.aclose()
        assert pool.router.alive() == []
    asyncio.run(go())


def test_a_request_fails_fast_when_every_replica_is_dead_and_none_can_start(local_ray):
    from workers.cluster import ClusterConfig, ReplicaPoolConfig
    from workers.ray_pool import ReplicaPool

    pool = ReplicaPool("generator", "fake", {"exit_on_call": 1}, ReplicaPoolConfig(replicas=1, num_cpus=0.25),
                       ClusterConfig(address="local", max_attempts=2))

    async def no_more_replicas():
        raise BackendError("no capacity left for a replacement", retryable=False)

    async def go():
        await pool.astart()
        pool._start_replica = no_more_replicas  # from now on every replacement fails to start
        with pytest.raises(BackendError, match="every generator replica is dead and none is starting"):
            await pool.call("generate", ([],), key=None, weight=1)
        assert pool.counters["failed_replacements"] == 1
        await pool.aclose()
    asyncio.run(go())


def test_every_caller_waiting_on_a_failed_start_gets_the_start_error(local_ray, tmp_path):
    from workers.cluster import ClusterConfig, ReplicaPoolConfig
    from workers.ray_pool import ReplicaPool

    pool = ReplicaPool("generator", "fake", {"fail_start_token": str(tmp_path / "bad")},
                       ReplicaPoolConfig(replicas=1, num_cpus=0.25), ClusterConfig(address="local"))

    async def go():
        outcomes = await asyncio.gather(pool.astart(), pool.astart(), pool.astart(), return_exceptions=True)
        assert all(isinstance(o, BackendError) and "failed to start" in str(o) for o in outcomes), outcomes
        await pool.astart()  # the next try starts a good one
        assert len(pool.router.alive()) == 1
        await pool.aclose()
        with pytest.raises(BackendError, match="closed"):
            await pool.astart()
    asyncio.run(go())
