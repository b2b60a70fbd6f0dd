"""Generator and scorer pools of Ray actors, behind the ordinary Generator and Scorer interfaces.

Each replica is a `WorkerHost` wrapped by `ray.remote` here, at wiring time.
A `Router` picks the replica for each batch (prefix affinity, least-loaded,
bounded in-flight). When a replica dies mid-request (its process is killed, its
engine dies, its node goes away) the pool marks it dead, starts a replacement in
the background, and sends the same batch to a live replica, up to
`max_attempts` tries. The ledger is charged only for the results that come
back, once, so a retried request is never charged twice; what the dead replica
had generated is lost compute, counted in `stats()["retries"]`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any, Sequence

from ttc.cluster import ClusterConfig, PoolConfig, connect
from ttc.errors import BackendError, VerifierError
from ttc.interfaces import Generator, Scorer, ScoreResult
from ttc.routing import Replica, Router, affinity_key
from ttc.types import GenerationRequest, GenerationResult, Problem, Trajectory
from workers.ray_host import Failure, WorkerHost

log = logging.getLogger("ttc.cluster")


def replica_failures() -> tuple[type[BaseException], ...]:
    """Ray's errors that mean "this replica is gone", not "this request is bad"."""
    from ray import exceptions as rx

    return (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError,
            rx.LocalRayletDiedError)


class ReplicaPool:
    """Start, route to, retry across and replace the replicas of one worker kind."""

    def __init__(self, kind: str, name: str, options: dict[str, Any], pool: PoolConfig, cluster: ClusterConfig):
        self.kind, self.name, self.options = kind, name, dict(options)
        self.pool, self.cluster = pool, cluster
        self.router = Router(pool.max_in_flight)
        self.description: dict[str, Any] = {}
        self.counters = defaultdict(int)  # retries, replaced, failures
        self._actor_cls = None
        self._replacing: set[asyncio.Task] = set()
        self._start: asyncio.Future | None = None
        self._closed = False

    # ---- replicas -----------------------------------------------------------------------------
    def _new_actor(self):
        import ray

        if self._actor_cls is None:
            self._actor_cls = ray.remote(WorkerHost)  # the plain class becomes an actor only here
        p = self.pool
        return self._actor_cls.options(
            num_cpus=p.num_cpus, num_gpus=p.num_gpus, resources=p.resources or None,
            runtime_env=p.runtime_env or None, max_concurrency=max(1000, 4 * p.max_in_flight),
            max_restarts=0,  # the pool replaces dead replicas itself, with a fresh actor
        ).remote(self.kind, self.name, self.options)

    async def _start_replica(self) -> Replica:
        actor = self._new_actor()
        try:
            pid = await asyncio.wait_for(actor.ready.remote(), self.cluster.replica_start_timeout_s)
        except BaseException as exc:
            self._kill(actor)
            if isinstance(exc, asyncio.TimeoutError):
                raise BackendError(f"a {self.kind} replica ({self.name}) did not start in "
                                   f"{self.cluster.replica_start_timeout_s} s", retryable=False) from None
            if isinstance(exc, replica_failures()) or hasattr(exc, "cause"):
                raise BackendError(f"a {self.kind} replica ({self.name}) failed to start: {exc}",
                                   retryable=False) from None
            raise
        if not self.description:
            self.description = await actor.describe.remote()
        return await self.router.add(actor, pid=pid)

    def start(self) -> None:
        """Connect to the cluster; the replicas themselves start in `astart` (inside the engine's loop)."""
        connect(self.cluster)

    async def astart(self) -> None:
        """Start the replicas once; concurrent first callers wait for the same start."""
        if self._start is None:
            self._start = asyncio.ensure_future(
                asyncio.gather(*(self._start_replica() for _ in range(self.pool.replicas))))
        try:
            await asyncio.shield(self._start)
        except BaseException:
            if self._start.done():  # a failed start may be tried again by the next call
                self._start = None
            raise

    def _kill(self, actor) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass

    async def _replace(self, replica: Replica) -> None:
        """Take a dead replica out and start a fresh one in its place, in the background."""
        if not replica.alive:
            return
        await self.router.mark_dead(replica)
        self._kill(replica.handle)
        self.counters["replaced"] += 1
        log.warning("%s replica %s (pid %s) died; starting a replacement", self.kind, replica.id,
                    replica.meta.get("pid"))

        async def replace():
            try:
                await self._start_replica()
            except Exception as exc:  # noqa: BLE001 - logged; callers time out waiting for a replica
                self.counters["failed_replacements"] += 1
                log.error("replacement %s replica failed to start: %s", self.kind, exc)

        if not self._closed:
            task = asyncio.get_running_loop().create_task(replace())
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)

    # ---- calls --------------------------------------------------------------------------------
    async def call(self, method: str, args: tuple, *, key: str | None, weight: int, keys: Sequence = ()) -> Any:
        """One batch on one replica, retried on another when its replica dies."""
        await self.astart()
        failures = replica_failures()
        last = ""
        for attempt in range(1, self.cluster.max_attempts + 1):
            try:
                replica = await self.router.acquire(key, weight, timeout=self.cluster.replica_start_timeout_s)
            except asyncio.TimeoutError:
                raise BackendError(f"no live {self.kind} replica within {self.cluster.replica_start_timeout_s} s "
                                   f"({self.counters['replaced']} replaced so far; last error: {last})",
                                   retryable=False) from None
            try:
                ref = getattr(replica.handle, method).remote(*args, *((keys,) if keys else ()))
                timeout = self.cluster.request_timeout_s
                result = await (asyncio.wait_for(ref, timeout) if timeout else ref)
            except (asyncio.TimeoutError, *failures) as exc:
                last = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self.counters["failures"] += 1
                await self._replace(replica)
            else:
                if not isinstance(result, Failure):
                    return result
                if not (result.dead or result.retryable):
                    raise (BackendError if self.kind == "generator" else VerifierError)(result.message)
                last = result.message
                self.counters["failures"] += 1
                if result.dead:
                    await self._replace(replica)
            finally:
                await self.router.release(replica, weight)
            if attempt < self.cluster.max_attempts:
                self.counters["retries"] += 1
        raise BackendError(f"{self.kind} request failed on {self.cluster.max_attempts} replicas "
                           f"(cluster.max_attempts); last error: {last}", retryable=False)

    def call_sync(self, method: str, *args: Any) -> Any:
        """A quick synchronous call (prompt rendering, token counts) on any live replica."""
        import ray

        live = self.router.alive()
        if not live:
            raise BackendError(f"no live {self.kind} replica to ask for {method}", retryable=True)
        return ray.get(getattr(live[0].handle, method).remote(*args), timeout=60)

    def stats(self) -> dict[str, Any]:
        import ray

        replicas = []
        for r in self.router.replicas:
            try:
                s = ray.get(r.handle.stats.remote(), timeout=30)
            except Exception as exc:  # noqa: BLE001 - a replica dying while asked
                s = {"error": str(exc).splitlines()[0]}
            replicas.append({"id": r.id, "served": r.served, "affinity_hits": r.affinity_hits, **s})
        return {"replicas": replicas, **self.counters}

    async def aclose(self) -> None:
        self._closed = True
        for t in list(self._replacing):
            t.cancel()
        for r in list(self.router.replicas):
            try:
                await asyncio.wait_for(r.handle.aclose.remote(), 30)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            self._kill(r.handle)
            await self.router.mark_dead(r)


class RayGeneratorPool(Generator):
    """A Generator whose requests run on a pool of replicas of another backend."""

    def __init__(self, backend: str, options: dict[str, Any], cluster: ClusterConfig):
        self.replicas = ReplicaPool("generator", backend, options, cluster.generator, cluster)
        self._rendered: dict[tuple, str] = {}

    def start(self) -> None:
        self.replicas.start()

    async def astart(self) -> None:
        await self.replicas.astart()
        self.model_name = self.replicas.description.get("model_name", "unknown")
        self.num_parameters = self.replicas.description.get("num_parameters")

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        # One remote call per affinity group: a search step's requests for one problem travel together.
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[affinity_key(r.affinity)].append(i)
        out: list[GenerationResult | None] = [None] * len(requests)

        async def send(key, idx):
            batch = [requests[i] for i in idx]
            results = await self.replicas.call("generate", (batch,), key=key, weight=len(batch), keys=[key])
            for i, res in zip(idx, results):
                out[i] = res

        await asyncio.gather(*(send(k, idx) for k, idx in groups.items()))
        return out  # type: ignore[return-value]

    def render_prompt(self, problem: Problem) -> str:
        # Rendered by a replica (it has the tokenizer and chat template); cached per distinct prompt.
        key = (problem.system, problem.prompt)
        if key not in self._rendered:
            if len(self._rendered) > 10_000:
                self._rendered.clear()
            self._rendered[key] = self.replicas.call_sync("render_prompt", problem)
        return self._rendered[key]

    def count_tokens(self, text: str) -> int:
        return self.replicas.call_sync("count_tokens", text)

    def stats(self) -> dict[str, Any]:
        return self.replicas.stats()

    async def aclose(self) -> None:
        await self.replicas.aclose()


class RayScorerPool(Scorer):
    """A Scorer (a PRM, say) on its own pool of replicas, so scoring overlaps generation."""

    def __init__(self, verifier: str, options: dict[str, Any], cluster: ClusterConfig):
        self.replicas = ReplicaPool("scorer", verifier, options, cluster.scorer, cluster)
        self.name = verifier

    def start(self) -> None:
        self.replicas.start()

    async def astart(self) -> None:
        await self.replicas.astart()
        self.num_parameters = self.replicas.description.get("num_parameters")

    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        # A problem's trajectories share its prompt: keep them on one replica's prefix cache.
        key = affinity_key((problem.system or "") + problem.prompt)
        return await self.replicas.call("score", (problem, list(trajectories)), key=key, weight=1)

    def estimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        return self.replicas.call_sync("estimate_tokens", problem, list(trajectories))

    def stats(self) -> dict[str, Any]:
        return self.replicas.stats()

    async def aclose(self) -> None:
        await self.replicas.aclose()
