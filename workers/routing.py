"""Routing requests over a pool of replicas: prefix affinity, least-loaded, bounded in-flight.

Pure control flow with no Ray in it, so it is unit-tested on its own; the Ray
pools (workers/ray_pool.py) hold one Router each.

- Prefix affinity: every request a SearchContext sends starts with its
  problem's rendered prompt, and carries that prompt as its affinity key. The
  first request of a key goes to the least-loaded replica, and later ones (the
  step-search continuations, the next round of samples) follow it there, where
  vLLM's prefix cache already holds the shared prefix.
- Backpressure: a replica takes at most `max_in_flight` requests at a time;
  when the affine replica is full the request goes to the least-loaded one that
  is not (a cache miss costs less than a queue), and when every replica is full
  the caller waits.
- A replica marked dead takes nothing more; its keys move on their next request.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable


class NoReplica(Exception):
    """Waiting for a replica is pointless: none is alive and none is coming."""


@dataclass(eq=False)
class Replica:
    """The router's view of one worker: a handle and its load."""

    id: int
    handle: Any
    in_flight: int = 0
    alive: bool = True
    served: int = 0  # requests routed to it
    affinity_hits: int = 0  # of those, how many followed their key here
    meta: dict[str, Any] = field(default_factory=dict)


def affinity_key(text: str | None) -> str | None:
    """A short, stable key for a prompt prefix (the full prompt can be long)."""
    return None if text is None else hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class Router:
    """Chooses a replica per request (affinity, then least-loaded) and makes callers wait when all are full."""

    def __init__(self, max_in_flight: int, *, remembered_keys: int = 100_000):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.replicas: list[Replica] = []
        self._ids = itertools.count()
        self._affinity: OrderedDict[str, Replica] = OrderedDict()  # LRU: key -> replica
        self._remembered = remembered_keys
        self._changed = asyncio.Condition()

    # ---- membership ---------------------------------------------------------------------------
    async def add(self, handle: Any, **meta: Any) -> Replica:
        """Put a started worker into rotation and wake the callers waiting for room."""
        replica = Replica(next(self._ids), handle, meta=dict(meta))
        self.replicas.append(replica)
        await self.notify()
        return replica

    def drop(self, replica: Replica) -> bool:
        """Take a replica out of rotation at once (no waiter is woken); False if it was out already."""
        if not replica.alive:
            return False
        replica.alive = False
        self.replicas = [r for r in self.replicas if r is not replica]
        return True

    async def mark_dead(self, replica: Replica) -> None:
        """Take a replica out of rotation; its keys are re-routed on their next request."""
        if self.drop(replica):
            await self.notify()

    def alive(self) -> list[Replica]:
        """The replicas still in rotation."""
        return [r for r in self.replicas if r.alive]

    # ---- routing ------------------------------------------------------------------------------
    def pick(self, key: str | None, weight: int = 1) -> Replica | None:
        """The replica for a request of `weight` requests, or None when every replica is full."""
        live = [r for r in self.replicas if r.alive]
        if not live:
            return None
        affine = self._affinity.get(key) if key is not None else None
        if affine is not None and affine.alive and self._fits(affine, weight):
            self._affinity.move_to_end(key)
            affine.affinity_hits += 1
            return affine
        room = [r for r in live if self._fits(r, weight)]
        if not room:
            return None
        chosen = min(room, key=lambda r: (r.in_flight, r.served, r.id))
        if key is not None and (affine is None or not affine.alive):
            self._remember(key, chosen)
        return chosen

    def _fits(self, r: Replica, weight: int) -> bool:
        # An oversized batch still goes to an idle replica, or it would never be sent.
        return r.in_flight + weight <= self.max_in_flight or r.in_flight == 0

    def _remember(self, key: str, replica: Replica) -> None:
        self._affinity[key] = replica
        self._affinity.move_to_end(key)
        while len(self._affinity) > self._remembered:
            self._affinity.popitem(last=False)

    async def acquire(self, key: str | None, weight: int = 1, timeout: float | None = None,
                      give_up: Callable[[], str | None] | None = None, poll_s: float = 1.0) -> Replica:
        """Wait for a replica with room, count the request against it, and return it.

        Raises asyncio.TimeoutError when none frees up (or none comes alive) in `timeout` seconds,
        and NoReplica when `give_up()` (asked while waiting, at least every `poll_s`) says why
        waiting longer is pointless.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        async with self._changed:
            while (replica := self.pick(key, weight)) is None:
                if give_up is not None and (why := give_up()):
                    raise NoReplica(why)
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise asyncio.TimeoutError(f"no replica had room for {weight} request(s) in {timeout} s")
                if give_up is not None and not self.alive():  # full replicas wake waiters on release
                    left = poll_s if left is None else min(left, poll_s)
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except asyncio.TimeoutError:
                    continue  # the loop decides: a replica may have freed up at the last moment
            replica.in_flight += weight
            replica.served += weight
            return replica

    async def release(self, replica: Replica, weight: int = 1) -> None:
        """Give back the room `acquire` counted (the request finished or failed) and wake waiters."""
        replica.in_flight = max(0, replica.in_flight - weight)
        await self.notify()

    async def notify(self) -> None:
        """Wake the waiters so they look again (room freed, a replica added, a start given up)."""
        async with self._changed:
            self._changed.notify_all()
