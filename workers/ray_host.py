"""WorkerHost: a plain class that holds one generator or scorer; Ray makes it an actor at wiring time.

It builds its worker from the registries by name and options (so the actor's
process imports the worker, not the driver), starts it inside the actor's own
event loop (vLLM's AsyncLLM is bound to the loop it starts on), and counts
what it serves so routing and backpressure can be checked from outside.

A worker error comes back as a `Failure` value rather than an exception, so the
pool can tell, without depending on how Ray wraps exceptions, a bad request
(not retried) from a dead worker (replaced, and the request retried elsewhere).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

from ttc.core.plugins import Generator

#: Affinity keys a replica remembers for `stats()`.
KEPT_AFFINITY_KEYS = 10_000


@dataclass
class Failure:
    """What went wrong in the worker, in plain values that cross process boundaries."""

    message: str
    retryable: bool  # the same request may succeed if sent again
    dead: bool  # this worker cannot serve anything more: replace it
    #: Attempts the worker itself lost before it gave up (a BackendError's lost_requests / lost_tokens,
    #: e.g. an HTTP backend's retries); the attempt that failed is not among them.
    lost_requests: int = 0
    lost_tokens: int = 0


class WorkerHost:
    """One generator or scorer inside a Ray actor: builds it there, serves it, counts its load."""

    def __init__(self, kind: str, name: str, options: dict[str, Any]):
        self.kind, self.name, self.options = kind, name, dict(options)
        self.worker = None
        self.in_flight = 0
        self.peak_in_flight = 0
        self.calls = 0
        self.affinity_keys: OrderedDict[str, None] = OrderedDict()

    async def ready(self) -> int:
        """Build and start the worker (loading its model); returns this process's pid."""
        if self.worker is None:
            from ttc.core.registry import build

            kind, prefix = ("backend", "backend_options") if self.kind == "generator" else ("verifier", "verifier_options")
            self.worker = build(kind, self.name, self.options, prefix=prefix)
            self.worker.start()
            await self.worker.astart()
        return os.getpid()

    async def generate(self, requests: Sequence[Any], keys: Sequence[str | None] = ()) -> Any:
        """The worker's results, or a `Failure`; `keys` are the requests' affinity keys, kept for `stats()`."""
        return await self._serve(lambda: self.worker.generate(requests), len(requests), keys)

    async def score(self, problem: Any, trajectories: Sequence[Any]) -> Any:
        """The scorer's `ScoreResult`, or a `Failure` the pool can act on."""
        return await self._serve(lambda: self.worker.score(problem, trajectories), 1, ())

    async def _serve(self, call, weight: int, keys: Sequence[str | None]) -> Any:
        from ttc.core.errors import BackendError

        await self.ready()
        self.calls += 1
        for k in keys:  # the most recent keys only: enough to check routing, bounded on long runs
            if k is not None:
                self.affinity_keys[k] = None
                self.affinity_keys.move_to_end(k)
        while len(self.affinity_keys) > KEPT_AFFINITY_KEYS:
            self.affinity_keys.popitem(last=False)
        self.in_flight += weight
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - every error crosses back as a value the pool understands
            dead = self.worker.dead
            backend = isinstance(exc, BackendError)
            return Failure(f"{type(exc).__name__}: {exc}", backend and exc.retryable, dead,
                           exc.lost_requests if backend else 0, exc.lost_tokens if backend else 0)
        finally:
            self.in_flight -= weight

    def render_prompt(self, problem: Any) -> str:
        """The worker's rendered prompt, so the driver needs no tokenizer or chat template."""
        return self.worker.render_prompt(problem)

    def count_tokens(self, text: str) -> int:
        """The worker's token count of `text`, with its own tokenizer."""
        return self.worker.count_tokens(text)

    def estimate_tokens(self, problem: Any, trajectories: Sequence[Any]) -> int:
        """The scorer's verifier-token estimate, so the driver can cap a score call before sending it."""
        return self.worker.estimate_tokens(problem, trajectories)

    def describe(self) -> dict[str, Any]:
        """What the pool copies onto its own face: model name and parameter count."""
        generator = isinstance(self.worker, Generator)
        return {"model_name": self.worker.model_name if generator else self.name,
                "num_parameters": self.worker.num_parameters,
                "name": self.name if generator else self.worker.name}

    def stats(self) -> dict[str, Any]:
        """Load and routing figures of this replica (pid, calls, in-flight peak, recent affinity keys)."""
        return {"pid": os.getpid(), "calls": self.calls, "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight, "affinity_keys": sorted(self.affinity_keys)}

    async def aclose(self) -> None:
        """Close the hosted worker (frees its model) before the actor is killed."""
        if self.worker is not None:
            await self.worker.aclose()
