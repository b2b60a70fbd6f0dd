"""The router: prefix affinity, least-loaded choice, bounded in-flight requests, dead replicas."""
import asyncio

import pytest

from workers.routing import NoReplica, Router, affinity_key


def run(coro):
    return asyncio.run(coro)


def test_a_key_follows_its_first_replica_and_new_keys_spread():
    async def go():
        router = Router(max_in_flight=8)
        a, b = await router.add("a"), await router.add("b")
        first = await router.acquire("k1")
        second = await router.acquire("k2")  # least loaded: the other replica
        assert {first.handle, second.handle} == {"a", "b"}
        again = await router.acquire("k1")  # follows k1 although it is now the busier one
        assert again is first and first.affinity_hits == 1
        for r in (first, second, again):
            await router.release(r)
        assert a.in_flight == b.in_flight == 0
    run(go())


def test_requests_without_a_key_go_to_the_least_loaded_replica():
    async def go():
        router = Router(max_in_flight=8)
        await router.add("a"), await router.add("b"), await router.add("c")
        held = [await router.acquire(None) for _ in range(6)]
        assert sorted(r.in_flight for r in router.replicas) == [2, 2, 2]
        for r in held:
            await router.release(r)
    run(go())


def test_a_full_affine_replica_sends_the_request_elsewhere_without_moving_the_key():
    async def go():
        router = Router(max_in_flight=2)
        await router.add("a"), await router.add("b")
        home = await router.acquire("k", weight=2)  # fills its replica
        other = await router.acquire("k")
        assert other is not home
        await router.release(home, 2)
        assert await router.acquire("k") is home  # the key still lives where its cache is
    run(go())


def test_backpressure_bounds_in_flight_and_waiters_resume_in_turn():
    async def go():
        router = Router(max_in_flight=2)
        await router.add("only")
        peak, now = 0, 0

        async def request(i):
            nonlocal peak, now
            r = await router.acquire(f"k{i}")
            now += 1
            peak = max(peak, now)
            await asyncio.sleep(0.01)
            now -= 1
            await router.release(r)

        await asyncio.gather(*(request(i) for i in range(10)))
        assert peak == 2 and router.replicas[0].served == 10 and router.replicas[0].in_flight == 0
    run(go())


def test_an_oversized_batch_still_goes_to_an_idle_replica():
    async def go():
        router = Router(max_in_flight=4)
        await router.add("a")
        r = await router.acquire("k", weight=10)
        assert r.in_flight == 10
        with pytest.raises(asyncio.TimeoutError):
            await router.acquire("k2", timeout=0.05)  # now nothing has room
    run(go())


def test_dead_replicas_take_nothing_and_their_keys_move():
    async def go():
        router = Router(max_in_flight=8)
        a = await router.add("a")
        b = await router.add("b")
        r = await router.acquire("k")
        await router.release(r)
        await router.mark_dead(r)
        moved = await router.acquire("k")
        assert moved is not r and moved.alive and moved in (a, b)
        assert await router.acquire("k") is moved  # the key now lives on the survivor
        await router.mark_dead(moved)
        with pytest.raises(asyncio.TimeoutError):
            await router.acquire("k", timeout=0.05)  # no replica alive: wait, then time out

        async def late_replica():
            await asyncio.sleep(0.02)
            await router.add("c")

        asyncio.get_running_loop().create_task(late_replica())
        assert (await router.acquire("k", timeout=2)).handle == "c"  # a replacement unblocks waiters
    run(go())


def test_affinity_memory_is_bounded():
    async def go():
        router = Router(max_in_flight=100, remembered_keys=3)
        await router.add("a")
        for i in range(10):
            await router.release(await router.acquire(f"k{i}"))
        assert len(router._affinity) == 3
    run(go())


def test_affinity_keys_are_short_and_stable():
    assert affinity_key("x" * 10_000) == affinity_key("x" * 10_000) != affinity_key("y")
    assert len(affinity_key("prompt")) == 24 and affinity_key(None) is None


def test_max_in_flight_must_be_positive():
    with pytest.raises(ValueError, match="max_in_flight must be at least 1, got 0"):
        Router(0)


def test_a_waiter_gives_up_when_told_waiting_is_pointless():
    async def go():
        router = Router(max_in_flight=1)
        reasons = iter([None, None, "none is coming"])
        with pytest.raises(NoReplica, match="none is coming"):
            await router.acquire("k", give_up=lambda: next(reasons), poll_s=0.01)
    run(go())


def test_a_full_replica_keeps_its_waiters_until_room_frees_up():
    async def go():
        router = Router(max_in_flight=1)
        r = await router.add("a")
        await router.acquire(None)
        waiter = asyncio.ensure_future(router.acquire(None, give_up=lambda: None, poll_s=0.01))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # backpressure: it waits, polling give_up, and does not fail
        await router.release(r)
        assert await asyncio.wait_for(waiter, 1) is r
    run(go())


def test_drop_takes_a_replica_out_at_once_and_only_once():
    async def go():
        router = Router(max_in_flight=4)
        a, b = await router.add("a"), await router.add("b")
        assert router.drop(a) and not router.drop(a)
        assert router.alive() == [b] and (await router.acquire("k")) is b
    run(go())
