"""The OpenAI-compatible ASGI app: /v1/chat/completions, /v1/completions, /v1/models, /health,
/ready, /metrics.

Every request is parsed into its own SearchRequest (`ttc.serve.requests`) and solved by the one
shared Engine, so concurrent requests land in the same continuous batch. Admission is bounded: at
most `max_concurrent` searches run and `queue_size` wait; beyond that a 429 with Retry-After. A
request's deadline (`request_timeout_s`, queue included) becomes its budget's seconds cap, so a
slow search returns what it found rather than nothing; past the deadline plus a grace, a 504.
`usage` counts every token the search spent (all samples, continuations and forced answers:
`completion_tokens` is the generated tokens, `prompt_tokens` the prompt tokens processed, and
`total_tokens` adds the verifier's), never only the chosen answer's.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from ttc.core.errors import BackendError, BudgetError, ConfigError, SolveError, TTCError, VerifierError
from ttc.core.types import Solution, Trajectory
from ttc.serve.config import ServeConfig
from ttc.serve.metrics import ServerMetrics
from ttc.serve.requests import RequestError, SearchRequest, parse

#: Seconds past a request's deadline before it is abandoned with a 504 (the seconds cap normally ends it first).
GRACE_S = 5.0
#: Characters per content chunk when the chosen answer is streamed.
CHUNK_CHARS = 64


class Admission:
    """At most `max_running` searches at once and `max_waiting` more in line; the rest are turned away.

    `admit()` takes a place in line at once (so requests arriving together are counted together, streamed
    or not); `slot()` turns that place into a running search, or gives it back if it never gets one."""

    def __init__(self, running: int, waiting: int):
        self.max_running, self.max_waiting = running, waiting
        self.running = self.waiting = 0
        self._slots: asyncio.Semaphore | None = None

    def admit(self) -> None:
        """Take a place in line, or raise a 429 now when every slot and the whole queue are taken."""
        if self.running + self.waiting >= self.max_running + self.max_waiting:
            raise RequestError("the server is at capacity (every search slot busy and the queue full); retry later",
                               status=429, kind="rate_limit_error")
        self.waiting += 1

    @asynccontextmanager
    async def slot(self, timeout: float):
        """For an admitted request: wait for a slot within `timeout`, run, and free it."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_running)
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout)
        except asyncio.TimeoutError:
            raise RequestError("timed out waiting for a search slot", status=504, kind="timeout") from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error", code: str | None = None):
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def create_app(engine, config: ServeConfig, *, api_key: str | None = None) -> FastAPI:
    """The app around a started (or lazily starting) Engine; the caller owns the engine."""
    s = config.serve
    metrics = ServerMetrics()
    admission = Admission(s.max_concurrent, s.queue_size)
    state = {"dead": None}  # the backend failure that made the server unready, if any
    app = FastAPI(title="ttc", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics, app.state.admission, app.state.engine = metrics, admission, engine

    def observe() -> None:
        metrics.queue_depth.set(admission.waiting)
        metrics.in_flight.set(admission.running)

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
                metrics.errors.labels("auth").inc()
                return JSONResponse(error_body("missing or wrong API key (Authorization: Bearer ...)",
                                               kind="authentication_error", code="invalid_api_key"), status_code=401)
        return await call_next(request)

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, exc: RequestError):
        metrics.errors.labels(exc.kind).inc()
        headers = {"Retry-After": str(s.retry_after_s)} if exc.status == 429 else None
        return JSONResponse(error_body(exc.message, exc.param, exc.kind), status_code=exc.status, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        metrics.errors.labels("server_error").inc()
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", kind="server_error"), status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if engine.backend_dead:  # a refused request does not make the server unready; a dead backend does
            return JSONResponse({"status": "unavailable", "reason": state["dead"] or "the model backend is dead"},
                                status_code=503)
        return {"status": "ready", "in_flight": admission.running, "queued": admission.waiting}

    @app.get("/metrics")
    async def prometheus():
        observe()
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        name = await asyncio.to_thread(lambda: engine.model_name)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ttc"}]}

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise RequestError(f"the request body is not valid JSON: {str(exc)[:200]}") from None

    async def search(req: SearchRequest, arrived: float, on_event=None) -> tuple[Solution, float]:
        """Wait for a slot, then solve within the request's deadline; errors become RequestErrors."""
        deadline = arrived + s.request_timeout_s
        async with admission.slot(max(deadline - time.monotonic(), 0.001)):
            started = time.monotonic()
            left = max(deadline - started, 0.001)
            budget = req.budget if req.budget.seconds is not None and req.budget.seconds <= left else \
                replace(req.budget, seconds=left)
            call = engine.asolve(req.problem, budget, req.strategy, seed=req.seed, verifier=req.verifier,
                                 on_event=on_event, **req.options)
            try:
                solution = await asyncio.wait_for(call, left + GRACE_S)
            except asyncio.TimeoutError:
                raise RequestError(f"the search did not finish within request_timeout_s={s.request_timeout_s}",
                                   status=504, kind="timeout") from None
            except (ConfigError, BudgetError) as exc:
                raise RequestError(str(exc), _param(exc)) from None
            except SolveError as exc:
                if isinstance(exc.__cause__, BackendError):
                    state["dead"] = str(exc)[:300]
                    raise RequestError(f"the model backend failed: {exc}", status=503, kind="service_unavailable") \
                        from None
                if isinstance(exc.__cause__, VerifierError):  # e.g. a verifier that cannot judge this prompt
                    raise RequestError(f"verifier: {exc}", "verifier") from None
                raise RequestError(f"the search failed: {exc}", status=500, kind="server_error") from None
            except BackendError as exc:
                state["dead"] = str(exc)[:300]
                raise RequestError(f"the model backend is unavailable: {exc}", status=503,
                                   kind="service_unavailable") from None
            except TTCError as exc:
                raise RequestError(str(exc), status=500, kind="server_error") from None
            if not solution.candidates:  # nothing finished in time: not a 200 without choices
                raise RequestError("no candidate finished within the request's deadline (request_timeout_s="
                                   f"{s.request_timeout_s}) or budget", status=504, kind="timeout")
            return solution, started - arrived

    def check(req: SearchRequest) -> None:
        """Options, strategy and verifier checked before the request takes a slot: a 400 at once."""
        from ttc.core.registry import STRATEGIES, VERIFIERS

        for registry, name, param in ((STRATEGIES, req.strategy, "strategy"), (VERIFIERS, req.verifier, "verifier")):
            if name is not None:
                try:
                    registry.get(name)
                except ConfigError as exc:
                    raise RequestError(str(exc), param) from None
        allowed = config.allowed_verifiers()
        if req.verifier is not None and req.verifier not in allowed:
            raise RequestError(f"verifier={req.verifier!r} is not served here (serve.verifiers: {sorted(allowed)})",
                               "verifier")
        try:
            engine.check(req.strategy, req.options, req.budget, req.verifier)
        except (ConfigError, BudgetError) as exc:
            raise RequestError(str(exc), _param(exc)) from None

    async def handle(request: Request, chat: bool) -> Response:
        arrived = time.monotonic()
        endpoint = "chat" if chat else "completions"
        try:
            req = parse(await body_of(request), config, chat=chat)
            check(req)
            admission.admit()
        except RequestError as exc:
            metrics.requests.labels(endpoint, str(exc.status)).inc()
            raise
        if req.stream:
            return StreamingResponse(stream(req, arrived, chat, endpoint), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            solution, queued = await search(req, arrived)
        except RequestError as exc:
            metrics.requests.labels(endpoint, str(exc.status)).inc()
            raise
        finally:
            observe()
        metrics.count_usage(solution.usage.to_dict())
        metrics.requests.labels(endpoint, "200").inc()
        metrics.latency.labels(endpoint).observe(time.monotonic() - arrived)
        return JSONResponse(response_body(req, solution, chat, queued, time.monotonic() - arrived))

    async def stream(req: SearchRequest, arrived: float, chat: bool, endpoint: str) -> AsyncIterator[str]:
        rid, created = _id(chat), int(time.time())
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_event(event: dict) -> None:  # on the engine's thread; must not raise
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the server's loop is closing: no one is listening any more
                pass

        task = asyncio.create_task(search(req, arrived, on_event))
        last: dict = {}
        try:
            while not task.done():
                try:
                    last = await asyncio.wait_for(events.get(), s.progress_interval_s)
                    while not events.empty():
                        last = events.get_nowait()
                except asyncio.TimeoutError:
                    pass
                progress = {"status": "searching", "elapsed_s": round(time.monotonic() - arrived, 2),
                            "queued": admission.waiting, **{k: v for k, v in last.items() if k != "event"},
                            **({"last_event": last["event"]} if "event" in last else {})}
                yield _sse(_chunk(rid, created, req, chat, 0, "", None, {"progress": progress}))
            try:
                solution, queued = task.result()
            except RequestError as exc:
                metrics.requests.labels(endpoint, str(exc.status)).inc()
                metrics.errors.labels(exc.kind).inc()
                yield _sse(error_body(exc.message, exc.param, exc.kind))
                yield "data: [DONE]\n\n"
                return
            body = response_body(req, solution, chat, queued, time.monotonic() - arrived)
            for choice in body["choices"]:
                text = choice["message"]["content"] if chat else choice["text"]
                i = choice["index"]
                if chat:
                    yield _sse(_chunk(rid, created, req, chat, i, "", None, role=True))
                for k in range(0, len(text), CHUNK_CHARS):
                    yield _sse(_chunk(rid, created, req, chat, i, text[k:k + CHUNK_CHARS], None))
                yield _sse(_chunk(rid, created, req, chat, i, "", choice["finish_reason"],
                                  {"summary": body["ttc"]} if i == 0 else None))
            if req.include_usage:
                yield _sse({"id": rid, "object": _object(chat, True), "created": created, "model": req.model,
                            "choices": [], "usage": body["usage"]})
            yield "data: [DONE]\n\n"
            metrics.count_usage(solution.usage.to_dict())
            metrics.requests.labels(endpoint, "200").inc()
            metrics.latency.labels(endpoint).observe(time.monotonic() - arrived)
        finally:
            if not task.done():  # the client went away: stop searching for it
                task.cancel()
            observe()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    return app


def _param(exc: Exception) -> str | None:
    fields = getattr(exc, "fields", None)
    return sorted(fields)[0] if fields else None


def _id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def _object(chat: bool, chunk: bool) -> str:
    return ("chat.completion" if chat else "text_completion") + (".chunk" if chunk and chat else "")


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _chunk(rid: str, created: int, req: SearchRequest, chat: bool, index: int, text: str, finish: str | None,
           ttc: dict | None = None, role: bool = False) -> dict:
    if chat:
        delta = {"role": "assistant", "content": ""} if role else {"content": text}
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
    else:
        choice = {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
    out = {"id": rid, "object": _object(chat, True), "created": created, "model": req.model, "choices": [choice]}
    if ttc is not None:
        out["ttc"] = ttc
    return out


def choices_of(solution: Solution, n: int) -> list[Trajectory]:
    """The chosen candidate first, then the best of each other answer by votes (then score), then more of
    the same answers; at most n, at least one when there is any candidate."""
    votes = solution.metrics.get("votes") or {}
    chosen = solution.best
    rest = [c for c in solution.candidates if c is not chosen]
    rest.sort(key=lambda c: (-(votes.get(c.answer, 0.0) if c.answer is not None else -1.0),
                             -(c.step_scores[-1] if c.step_scores else 0.0)))
    ordered, seen = ([chosen] if chosen is not None else []), {chosen.answer} if chosen is not None else set()
    for c in rest:  # distinct answers first
        if c.answer not in seen:
            ordered.append(c)
            seen.add(c.answer)
    ordered += [c for c in rest if c not in ordered]
    return ordered[:n]


def response_body(req: SearchRequest, solution: Solution, chat: bool, queued_s: float, wall_s: float) -> dict:
    u = solution.usage
    choices = []
    for i, t in enumerate(choices_of(solution, req.n)):
        finish = "stop" if t.finish_reason == "stop" else "length"
        if chat:
            choices.append({"index": i, "message": {"role": "assistant", "content": t.text}, "finish_reason": finish,
                            "logprobs": None})
        else:
            choices.append({"index": i, "text": t.text, "finish_reason": finish, "logprobs": None})
    usage = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.generated_tokens,
             "total_tokens": u.prompt_tokens + u.generated_tokens + u.verifier_tokens + u.lost_tokens,
             "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
             "verifier_tokens": u.verifier_tokens, "lost_tokens": u.lost_tokens}
    ttc = {"strategy": solution.strategy, "answer": solution.answer, "candidates": len(solution.candidates),
           "votes": solution.metrics.get("votes"), "budget": req.budget.to_dict(),
           "metrics": {k: v for k, v in solution.metrics.items() if k != "votes"},
           "usage": u.to_dict(), "queued_s": round(queued_s, 4), "wall_s": round(wall_s, 4)}
    return {"id": _id(chat), "object": _object(chat, False), "created": int(time.time()), "model": req.model,
            "choices": choices, "usage": usage, "ttc": ttc}
