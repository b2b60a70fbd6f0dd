"""Generator and scorer pools of Ray actors, behind the ordinary Generator and Scorer interfaces.

Each replica is a `WorkerHost` wrapped by `ray.remote` here, at wiring time.
A `Router` picks the replica for each batch (prefix affinity, least-loaded,
bounded in-flight). When a replica dies mid-request (its process is killed, its
engine dies, its node goes away) the pool marks it dead, starts a replacement in
the background, and sends the same batch to a live replica, up to
`max_attempts` tries. The ledger is charged only for the results that come
back, once, so a retried request is never charged twice; what the dead replica
had generated is lost compute: each retried attempt is reported on the request's
result (`lost_requests`, and `lost_tokens` up to n x max_tokens: the prompt's
length is not known here and counts 0), or on the BackendError when every attempt
failed, and counted in `stats()["retries"]`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from workers.cluster import ClusterConfig, ReplicaPoolConfig, connect, release
from ttc.core.errors import BackendError, VerifierError
from ttc.core.plugins import Generator, Scorer, ScoreResult
from ttc.core.registry import VERIFIERS
from workers.routing import NoReplica, Replica, Router, affinity_key
from ttc.core.types import GenerationRequest, GenerationResult, Problem, Trajectory
from workers.ray_host import Failure, WorkerHost

log = logging.getLogger("workers.cluster")


def replica_failures() -> tuple[type[BaseException], ...]:
    """Ray's errors that mean "this replica is gone", not "this request is bad"."""
    from ray import exceptions as rx

    return (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError,
            rx.LocalRayletDiedError)


@dataclass
class LostWork:
    """What one pool call lost on its way, tallied as it happens so a caller that cancels it still knows.

    `attempts`: attempts sent and lost, then retried (a dead replica, a retryable failure, a hung
    replica); the attempt that finally failed is not among them, since the caller counts it.
    `requests` / `tokens`: what the workers themselves reported lost inside failed attempts
    (an HTTP backend's own retries, say).
    """

    attempts: int = 0
    requests: int = 0
    tokens: int = 0

    def total(self, cost: tuple[int, int]) -> tuple[int, int]:
        """(requests, tokens) lost, when one attempt of the call costs `cost` = (requests, tokens)."""
        return self.attempts * cost[0] + self.requests, self.attempts * cost[1] + self.tokens


class ReplicaPool:
    """Start, route to, retry across and replace the replicas of one worker kind."""

    def __init__(self, kind: str, name: str, options: dict[str, Any], pool: ReplicaPoolConfig, cluster: ClusterConfig):
        self.kind, self.name, self.options = kind, name, dict(options)
        self.pool, self.cluster = pool, cluster
        self.router = Router(pool.max_in_flight)
        self._error = BackendError if kind == "generator" else VerifierError  # what a failed request raises
        self.description: dict[str, Any] = {}
        self.counters = defaultdict(int)  # retries, replaced, failures, failed_replacements
        self._actor_cls = None
        self._replacing: set[asyncio.Task] = set()
        self._start: asyncio.Future | None = None
        self._none_alive_since: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the engine's loop, where replacements run
        self._connected = False
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
            if not self.description:
                self.description = await actor.describe.remote()
            if self._closed:
                raise BackendError(f"the {self.kind} pool was closed while a replica started", retryable=False)
        except BaseException as exc:  # cancelled too: an actor nobody routes to must not live on
            self._kill(actor)
            if isinstance(exc, asyncio.TimeoutError):
                raise BackendError(f"a {self.kind} replica ({self.name}) did not start in "
                                   f"{self.cluster.replica_start_timeout_s} s", retryable=False) from None
            if isinstance(exc, _ray_error()):  # it died, its code raised, its runtime env failed...
                raise BackendError(f"a {self.kind} replica ({self.name}) failed to start: {_first_line(exc)}",
                                   retryable=False) from None
            raise
        self._none_alive_since = None
        return await self.router.add(actor, pid=pid)

    def start(self) -> None:
        """Connect to the cluster; the replicas themselves start in `astart` (inside the engine's loop)."""
        connect(self.cluster)
        self._connected = True

    async def astart(self) -> None:
        """Start the missing replicas once; concurrent first callers wait for the same start."""
        if self._closed:
            raise BackendError(f"the {self.kind} pool is closed", retryable=False)
        self._loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = asyncio.ensure_future(self._start_missing())
        start = self._start
        try:
            await asyncio.shield(start)
        except BaseException:
            if start.done() and self._start is start:  # a failed start may be tried again by the next call
                self._start = None
            raise

    async def _start_missing(self) -> None:
        # After a partial failure the replicas that did start stay: the next try adds only the rest.
        missing = self.pool.replicas - len(self.router.alive()) - len(self._replacing)
        results = await asyncio.gather(*(self._start_replica() for _ in range(max(0, missing))),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def _kill(self, actor) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass

    def _replace(self, replica: Replica) -> None:
        """Take a dead replica out at once and start a fresh one in its place, in the background."""
        if not self.router.drop(replica):
            return  # another request saw it die first
        self._kill(replica.handle)
        self.counters["replaced"] += 1
        log.warning("%s replica %s (pid %s) died; starting a replacement", self.kind, replica.id,
                    replica.meta.get("pid"))
        if self._closed or self._loop is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a blocking call from another thread: start it on the pool's own loop
            self._loop.call_soon_threadsafe(self._spawn_replacement)
        else:
            self._spawn_replacement()

    def _spawn_replacement(self) -> None:
        if not self._closed:
            task = self._loop.create_task(self._replacement())
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)

    async def _replacement(self) -> None:
        """Start one replica, trying again with backoff; waiting callers are told when it gives up."""
        try:
            for attempt in range(1, self.cluster.max_attempts + 1):
                try:
                    await self._start_replica()
                    return
                except Exception as exc:  # noqa: BLE001 - logged, counted, and tried again
                    log.error("replacement %s replica, try %d of %d, failed: %s", self.kind, attempt,
                              self.cluster.max_attempts, exc)
                    if attempt < self.cluster.max_attempts:
                        await asyncio.sleep(min(2.0 ** attempt, 30.0))
            self.counters["failed_replacements"] += 1
        finally:
            self._replacing.discard(asyncio.current_task())
            await self.router.notify()

    def _why_stop_waiting(self) -> str | None:
        """Asked while a request waits for room: a reason to fail now, or None to keep waiting.

        While replicas are alive a request waits as long as it takes (backpressure); with none
        alive it waits for a replacement, up to `replica_start_timeout_s`, and not at all when
        none is being started.
        """
        if self.router.alive():
            self._none_alive_since = None
            return None
        now = time.monotonic()
        if self._none_alive_since is None:
            self._none_alive_since = now
        starting = bool(self._replacing) or (self._start is not None and not self._start.done())
        if not starting:
            return (f"every {self.kind} replica is dead and none is starting ({self.counters['replaced']} "
                    f"replaced, {self.counters['failed_replacements']} replacements failed to start)")
        if now - self._none_alive_since > self.cluster.replica_start_timeout_s:
            return f"no live {self.kind} replica for {self.cluster.replica_start_timeout_s} s"
        return None

    # ---- calls --------------------------------------------------------------------------------
    async def call(self, method: str, args: tuple, *, key: str | None, weight: int, keys: Sequence = (),
                   lost: LostWork | None = None, cost: tuple[int, int] = (0, 0)) -> Any:
        """One batch on one replica, retried on another when its replica dies.

        Each retried attempt is tallied in `lost` (a fresh one when not given); a BackendError raised
        here carries the tally as lost requests and tokens, one attempt costing `cost` =
        (requests, tokens), the final failed attempt left to the caller.
        """
        import ray
        from ray.exceptions import RayTaskError

        lost = LostWork() if lost is None else lost

        def error(message: str, kind: type[Exception] = BackendError) -> Exception:
            if kind is not BackendError:
                return kind(message)
            requests, tokens = lost.total(cost)
            return BackendError(message, retryable=False, lost_requests=requests, lost_tokens=tokens)

        await self.astart()
        failures = replica_failures()
        last = ""
        for attempt in range(1, self.cluster.max_attempts + 1):
            try:
                replica = await self.router.acquire(key, weight, give_up=self._why_stop_waiting)
            except NoReplica as exc:
                if lost.attempts:  # the last retried attempt turned out to be the final one: the caller counts it
                    lost.attempts -= 1
                raise error(f"{self.kind} request not sent: {exc}; last error: {last or 'none'}") from None
            ref = None
            try:
                ref = getattr(replica.handle, method).remote(*args, *((keys,) if keys else ()))
                timeout = self.cluster.request_timeout_s
                result = await (asyncio.wait_for(ref, timeout) if timeout else ref)
            except asyncio.CancelledError:
                if ref is not None:  # the caller gave up (a time budget, a failed sibling): stop the work too
                    _cancel(ray, ref)
                raise
            except RayTaskError as exc:  # the worker's own code raised: a bad request, not a dead replica
                raise error(f"{self.kind} replica: {method} failed: {_first_line(exc.cause or exc)}",
                            self._error) from None
            except (asyncio.TimeoutError, *failures) as exc:
                if isinstance(exc, asyncio.TimeoutError):
                    _cancel(ray, ref)
                    exc = f"no answer in cluster.request_timeout_s={self.cluster.request_timeout_s} s"
                last = _first_line(exc)
                self.counters["failures"] += 1
                self._replace(replica)  # dead, or hung past the request timeout
            except _ray_error() as exc:  # anything else Ray raises (out of memory, system errors)
                raise error(f"{self.kind} replica: {method} failed: {_first_line(exc)}") from None
            else:
                if not isinstance(result, Failure):
                    return result
                lost.requests += result.lost_requests
                lost.tokens += result.lost_tokens
                if not (result.dead or result.retryable):
                    raise error(result.message, self._error)
                last = result.message
                self.counters["failures"] += 1
                if result.dead:
                    self._replace(replica)
            finally:
                await self.router.release(replica, weight)
            if attempt < self.cluster.max_attempts:
                self.counters["retries"] += 1
                lost.attempts += 1
        raise error(f"{self.kind} request failed on {self.cluster.max_attempts} replicas "
                    f"(cluster.max_attempts); last error: {last}")

    def call_sync(self, method: str, *args: Any) -> Any:
        """A quick blocking call (prompt rendering, token counts) for callers outside the engine's
        async path; tries each live replica in turn, replacing the ones that are gone."""
        import ray
        from ray.exceptions import GetTimeoutError, RayTaskError

        last = "none was alive"
        for replica in sorted(self.router.alive(), key=lambda r: r.in_flight):
            try:
                return ray.get(getattr(replica.handle, method).remote(*args), timeout=60)
            except (GetTimeoutError, *replica_failures()) as exc:
                last = _first_line(exc)
                self.counters["failures"] += 1
                self._replace(replica)
            except RayTaskError as exc:
                raise BackendError(f"{self.kind} replica: {method} failed: {_first_line(exc.cause or exc)}",
                                   retryable=False) from None
        raise BackendError(f"no live {self.kind} replica answered {method} ({last})", retryable=True)

    def stats(self) -> dict[str, Any]:
        """Each replica's own figures plus the pool's counters (retries, replaced, failures)."""
        import ray

        replicas = []
        for r in self.router.replicas:
            try:
                s = ray.get(r.handle.stats.remote(), timeout=30)
            except Exception as exc:  # noqa: BLE001 - a replica dying while asked
                s = {"error": _first_line(exc)}
            replicas.append({"id": r.id, "served": r.served, "affinity_hits": r.affinity_hits, **s})
        return {"replicas": replicas, **self.counters}

    async def aclose(self) -> None:
        """Stop pending starts, close and kill every replica, and let go of the cluster; idempotent."""
        if self._closed:
            return
        self._closed = True
        pending = [t for t in [self._start, *self._replacing] if t is not None and not t.done()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)  # their half-started actors are killed
        for r in list(self.router.replicas):
            try:
                await asyncio.wait_for(r.handle.aclose.remote(), 30)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            self._kill(r.handle)
            await self.router.mark_dead(r)
        if self._connected:
            release()


def _ray_error() -> type[BaseException]:
    from ray.exceptions import RayError

    return RayError


def _cancel(ray, ref) -> None:
    try:
        ray.cancel(ref)
    except Exception:  # noqa: BLE001 - already finished, or its replica is gone
        pass


def _first_line(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return (text.strip().splitlines() or [""])[0]


class RayGeneratorPool(Generator):
    """A Generator whose requests run on a pool of replicas of another backend."""

    def __init__(self, backend: str, options: dict[str, Any], cluster: ClusterConfig):
        self.replicas = ReplicaPool("generator", backend, options, cluster.generator, cluster)
        self._rendered: dict[tuple, str] = {}

    def start(self) -> None:
        """Connect to the cluster; the replicas start in `astart`."""
        self.replicas.start()

    async def astart(self) -> None:
        """Start the replicas, then take the model name and parameter count they report."""
        await self.replicas.astart()
        self.model_name = self.replicas.description.get("model_name", "unknown")
        self.num_parameters = self.replicas.description.get("num_parameters")

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Send the batch as one call per affinity group; if one group fails, cancel the rest.

        A request whose replica died and that was retried carries the lost attempts on its result
        (lost_requests, and n x max_tokens per attempt as lost_tokens: the prompt's length is not known
        here). When the batch fails, the BackendError carries every group's retried attempts.
        """
        # One remote call per affinity group: a search step's requests for one problem travel together.
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[affinity_key(r.affinity)].append(i)
        out: list[GenerationResult | None] = [None] * len(requests)
        bounds = [r.params.n * r.params.max_tokens for r in requests]
        costs = {k: (len(idx), sum(bounds[i] for i in idx)) for k, idx in groups.items()}
        lost = {k: LostWork() for k in groups}

        async def send(key, idx):
            batch = [requests[i] for i in idx]
            results = await self.replicas.call("generate", (batch,), key=key, weight=len(batch), keys=[key],
                                               lost=lost[key], cost=costs[key])
            for i, res in zip(idx, results):
                res.lost_requests += lost[key].attempts
                res.lost_tokens += lost[key].attempts * bounds[i]
                out[i] = res
            if results:  # what the workers reported losing belongs to the group: put it on its first result
                results[0].lost_requests += lost[key].requests
                results[0].lost_tokens += lost[key].tokens

        sends = [asyncio.ensure_future(send(k, idx)) for k, idx in groups.items()]
        try:
            await asyncio.gather(*sends)
        except BaseException as exc:
            for t in sends:  # one group failed (or the caller gave up): the others' work is wasted
                t.cancel()
            await asyncio.gather(*sends, return_exceptions=True)
            if isinstance(exc, BackendError):
                totals = [lost[k].total(costs[k]) for k in groups]
                exc.lost_requests = sum(r for r, _ in totals)
                exc.lost_tokens = sum(t for _, t in totals)
            raise
        return out  # type: ignore[return-value]

    # Prompts are rendered by a replica (it has the tokenizer and chat template), once per distinct prompt.
    def render_prompt(self, problem: Problem) -> str:
        """The prompt as a replica renders it (blocking); cached per (system, prompt)."""
        text = self._rendered.get((problem.system, problem.prompt))
        if text is None:
            text = self._keep_rendered(problem, self.replicas.call_sync("render_prompt", problem))
        return text

    async def arender_prompt(self, problem: Problem) -> str:
        """`render_prompt` without blocking the event loop while a replica answers."""
        text = self._rendered.get((problem.system, problem.prompt))
        if text is None:
            text = self._keep_rendered(problem, await self.replicas.call("render_prompt", (problem,), key=None,
                                                                          weight=0))
        return text

    def _keep_rendered(self, problem: Problem, text: str) -> str:
        if len(self._rendered) > 10_000:
            self._rendered.clear()
        self._rendered[(problem.system, problem.prompt)] = text
        return text

    def count_tokens(self, text: str) -> int:
        """A replica's token count (blocking call)."""
        return self.replicas.call_sync("count_tokens", text)

    async def acount_tokens(self, text: str) -> int:
        """A replica's token count, awaited."""
        return await self.replicas.call("count_tokens", (text,), key=None, weight=0)

    def stats(self) -> dict[str, Any]:
        """The replica pool's figures (per replica, plus retries and replacements)."""
        return self.replicas.stats()

    async def aclose(self) -> None:
        """Close the replica pool."""
        await self.replicas.aclose()


class RayScorerPool(Scorer):
    """A Scorer (a PRM, say) on its own pool of replicas, so scoring overlaps generation."""

    def __init__(self, verifier: str, options: dict[str, Any], cluster: ClusterConfig):
        self.replicas = ReplicaPool("scorer", verifier, options, cluster.scorer, cluster)
        self.name = verifier
        # What the scorer on the replicas declares, declared here too (its capabilities are the pool's).
        self.needs_logprobs = VERIFIERS.get(verifier).needs_logprobs

    def start(self) -> None:
        """Connect to the cluster; the replicas start in `astart`."""
        self.replicas.start()

    async def astart(self) -> None:
        """Start the replicas, then take the parameter count they report (for FLOPs)."""
        await self.replicas.astart()
        self.num_parameters = self.replicas.description.get("num_parameters")

    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        """Score on one replica, chosen by the problem's prompt so its prefix stays cached there."""
        # A problem's trajectories share its prompt: keep them on one replica's prefix cache.
        key = affinity_key((problem.system or "") + problem.prompt)
        lost = LostWork()
        result = await self.replicas.call("score", (problem, list(trajectories)), key=key, weight=1, lost=lost,
                                          cost=(1, 0))
        # An attempt lost to a dead or hung replica did the same work as the one that answered.
        result.lost_requests += lost.attempts + lost.requests
        result.lost_tokens += lost.attempts * result.verifier_tokens + lost.tokens
        return result

    def estimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        """A replica's verifier-token estimate (blocking call)."""
        return self.replicas.call_sync("estimate_tokens", problem, list(trajectories))

    async def aestimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        """A replica's verifier-token estimate, awaited."""
        return await self.replicas.call("estimate_tokens", (problem, list(trajectories)), key=None, weight=0)

    def stats(self) -> dict[str, Any]:
        """The replica pool's figures (per replica, plus retries and replacements)."""
        return self.replicas.stats()

    async def aclose(self) -> None:
        """Close the replica pool."""
        await self.replicas.aclose()
