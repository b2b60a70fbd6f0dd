"""Generator backend for any OpenAI-compatible `/completions` server (vLLM, llama.cpp, SGLang).

It exists so strategies can run against a model served elsewhere (another GPU
box, a shared cluster) without importing an engine in-process. The legacy
completions endpoint is used, not chat, because strategies continue partial
trajectories and need raw-text prompts. The budget ledger charges what this
returns, so token counts come from the server, never from a local guess
unless the server withholds them, and a failed request returns nothing at all.

Attempts that are retried (a timeout, a 5xx, a dropped connection) may have cost
the server compute that never came back: each is reported as lost on the
request's result (or on the BackendError of a failed batch), with the tokens the
server said it used, or else an upper bound. Without a local tokenizer nothing
can count tokens before sending, so `count_tokens` returns an upper bound
(UTF-8 bytes plus a few special tokens) and the ledger's caps stay hard.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, Sequence

import httpx
from pydantic import Field, field_validator

from ttc.core.config import StrictModel
from ttc.core.errors import BackendError, ConfigError
from ttc.core.plugins import Generator
from ttc.core.types import Completion, GenerationRequest, GenerationResult, Problem, SamplingParams

_MAX_WAIT_S = 30.0  # a server asking for minutes of back-off is better reported than waited on
_FINISH = {"stop": "stop", "length": "length"}
_sleep = asyncio.sleep  # module-level so tests can observe back-off without waiting
#: Tokens a server may add to a raw prompt that its text does not hold: BOS/EOS, a SentencePiece
#: word-start marker, a few more for safety. Part of the upper bound `count_tokens` gives without a tokenizer.
SPECIAL_TOKEN_ALLOWANCE = 8
#: Failures that happen before the request reaches the server (no connection made): nothing computed.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class OpenAIHTTPConfig(StrictModel):
    """Where the server is and how hard to try before giving up."""

    base_url: str = Field(description="Server root including the API prefix, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(min_length=1, description="Model name sent in each request (as the server registered it).")
    api_key: str | None = Field(
        default=None, repr=False, description="Bearer token; when unset, OPENAI_API_KEY from the environment, if any."
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Per-attempt HTTP timeout in seconds.")
    max_retries: int = Field(default=3, ge=0, description="Extra attempts after a retryable failure.")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay in seconds; doubles on each retry.")
    max_concurrency: int = Field(default=64, ge=1, description="Most HTTP requests in flight at once.")
    tokenizer: str | None = Field(
        default=None,
        description="Local path or hub name of the served model's tokenizer, loaded lazily with transformers "
        "for the chat template and exact prompt-token counts; without it prompts are sent as-is and counted by "
        "an upper bound (UTF-8 bytes plus a few special tokens), so prompt and FLOPs caps hold but reserve more.",
    )
    num_parameters: int | None = Field(default=None, gt=0, description="Model parameter count, for FLOPs estimates.")

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")


def _load_tokenizer(name: str) -> Any:
    try:
        from transformers import AutoTokenizer  # heavy import: only paid when a tokenizer is configured
    except ImportError as e:
        raise ConfigError(f"tokenizer={name!r} needs the 'transformers' package: {e}") from e
    return AutoTokenizer.from_pretrained(name)


def _server_message(resp: httpx.Response) -> str:
    """The server's own error text: vLLM/OpenAI nest it under "error", FastAPI under "detail"."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500] or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    return str(body)[:500]


def _reported_tokens(resp: httpx.Response) -> int | None:
    """Tokens a failed attempt used, when the server's error body says (a `usage` object); else None."""
    try:
        usage = resp.json().get("usage")
        return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return None


@dataclass
class _Lost:
    """One request's attempts lost to retries, tallied as they happen so a cancelled batch still knows them."""

    requests: int = 0
    tokens: int = 0


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return max(0.0, float(resp.headers["retry-after"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP-date: fall back to our own back-off


def _choice_logprobs(lp: Any) -> tuple[int | None, list[float] | None]:
    """(token count, chosen-token logprobs) from either logprobs layout servers emit.

    vLLM/SGLang use the legacy {"tokens", "token_logprobs"} shape; recent
    llama.cpp uses the chat-style {"content": [{"logprob": ...}]} even here.
    """
    if not isinstance(lp, dict):
        return None, None
    if isinstance(lp.get("tokens"), list):
        vals = lp.get("token_logprobs")
        return len(lp["tokens"]), [float(x) for x in vals] if isinstance(vals, list) else None
    if isinstance(lp.get("content"), list):
        return len(lp["content"]), [float(t["logprob"]) for t in lp["content"]]
    return None, None


class OpenAIHTTPGenerator(Generator):
    """Sends each GenerationRequest as one POST {base_url}/completions with n samples."""

    Config = OpenAIHTTPConfig

    def __init__(self, config: OpenAIHTTPConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.model_name = config.model
        self.num_parameters = config.num_parameters
        self._url = f"{config.base_url}/completions"
        self._api_key = config.api_key or os.environ.get("OPENAI_API_KEY")
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tok: Any = None

    def _ensure_client(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        # Created inside the running loop: an AsyncClient's pool and a Semaphore belong to
        # one loop, and callers (tests, CLI re-runs) may drive us from a fresh loop.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            n = self.config.max_concurrency
            self._client = httpx.AsyncClient(transport=self._transport, timeout=self.config.timeout_s, headers=headers,
                                             limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))
            self._sem = asyncio.Semaphore(n)
            self._loop = loop
        assert self._sem is not None
        return self._client, self._sem

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """POST every request concurrently (at most max_concurrency in flight); one failure fails the batch.

        The failed batch's siblings are cancelled at once (their connections closed, so a server such as
        vLLM aborts them), and the BackendError carries every retried attempt of every request in the
        batch as lost; the caller counts one attempt per request itself.
        """
        client, sem = self._ensure_client()
        lost = [_Lost() for _ in requests]
        tasks = [asyncio.ensure_future(self._one(client, sem, r, k)) for r, k in zip(requests, lost)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException as exc:
            # One failure fails the batch; stop the siblings so nothing keeps spending server time.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(exc, BackendError):
                exc.lost_requests = sum(k.requests for k in lost)
                exc.lost_tokens = sum(k.tokens for k in lost)
            raise

    async def _one(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, req: GenerationRequest,
                   lost: _Lost) -> GenerationResult:
        p = req.params
        # logprobs always >= 0 so the server lists the sampled tokens: the only exact per-choice count.
        body: dict[str, Any] = {"model": self.config.model, "prompt": req.prompt, "n": p.n,
                                "temperature": p.temperature, "top_p": p.top_p, "max_tokens": p.max_tokens,
                                "logprobs": max(p.logprobs or 0, 0)}
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        data = await self._post(client, sem, body, lost, lambda: self.count_tokens(req.prompt) + p.n * p.max_tokens)
        try:
            result = self._parse(data, p, req.prompt)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BackendError(
                f"{self._url} returned a malformed completions body ({type(e).__name__}: {e})", retryable=False,
                lost_requests=lost.requests, lost_tokens=lost.tokens,
            ) from e
        result.lost_requests, result.lost_tokens = lost.requests, lost.tokens
        return result

    async def _post(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, body: dict[str, Any], lost: _Lost,
                    bound) -> Any:
        """The 2xx JSON body, retrying timeouts, 408/429/5xx and dropped connections with back-off.

        Each retried attempt is added to `lost`: the tokens the server reported for it, 0 when it never
        reached the server (no connection) or was refused for rate (429), else `bound()`, an upper bound
        (the prompt as counted plus n x max_tokens). The last attempt is not added: the caller counts it.
        """
        attempts = self.config.max_retries + 1
        delay = self.config.backoff_s
        last = "no attempt made"

        def error(message: str, retryable: bool) -> BackendError:
            return BackendError(message, retryable=retryable, lost_requests=lost.requests, lost_tokens=lost.tokens)

        for attempt in range(1, attempts + 1):
            wait = delay
            try:
                async with sem:  # held per attempt, not across back-off, so sleepers do not starve others
                    resp = await client.post(self._url, json=body)
            except httpx.TransportError as e:  # includes every timeout
                last = f"{type(e).__name__}: {e}"
                used = 0 if isinstance(e, _NOT_SENT) else None
            except httpx.RequestError as e:
                raise error(f"request to {self._url} failed: {type(e).__name__}: {e}", False) from e
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    try:
                        return resp.json()
                    except ValueError as e:
                        raise error(f"{self._url} returned malformed JSON ({e}): {resp.text[:200]!r}", False) from e
                if status not in (408, 429) and status < 500:
                    raise error(f"{self._url} rejected the request with HTTP {status}: {_server_message(resp)}",
                                False)
                last = f"HTTP {status}: {_server_message(resp)}"
                hinted = _retry_after(resp)
                wait = delay if hinted is None else hinted
                used = 0 if status == 429 else _reported_tokens(resp)
            if attempt < attempts:
                lost.requests += 1
                lost.tokens += bound() if used is None else used
                await _sleep(min(wait, _MAX_WAIT_S))
                delay *= 2
        raise error(f"{self._url} failed after {attempts} attempt(s); last error: {last}", True)

    def _parse(self, data: dict[str, Any], params: SamplingParams, prompt: str) -> GenerationResult:
        choices = sorted(data["choices"], key=lambda c: int(c["index"]))
        if len(choices) != params.n:
            raise ValueError(f"expected {params.n} choices, got {len(choices)}")
        usage = data.get("usage") or {}
        texts = [c["text"] for c in choices]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("a choice's text is not a string")
        parsed = [_choice_logprobs(c.get("logprobs")) for c in choices]
        counts = [n for n, _ in parsed]
        unknown = [i for i, n in enumerate(counts) if n is None]
        if unknown:
            total = usage.get("completion_tokens")
            if total is None:  # server withheld usage too: a word count is the best left
                for i in unknown:
                    counts[i] = len(texts[i].split())
            else:
                # Approximation: usage only gives the request's total, so the remainder is split
                # evenly across the uncounted choices (exact when n=1); the sum stays exact.
                rest = max(int(total) - sum(n for n in counts if n is not None), 0)
                share, extra = divmod(rest, len(unknown))
                for k, i in enumerate(unknown):
                    counts[i] = share + (1 if k < extra else 0)
        completions = []
        for i, c in enumerate(choices):
            reason = _FINISH.get(c.get("finish_reason"), "abort")
            # vLLM's server names the stop string that fired; like the other backends, keep it in the
            # text so that steps re-join exactly. Servers that do not say cannot be told from EOS.
            stop = c.get("stop_reason") if reason == "stop" and isinstance(c.get("stop_reason"), str) else None
            text = texts[i] + stop if stop and not texts[i].endswith(stop) else texts[i]
            top = None
            if params.logprobs and isinstance(c.get("logprobs"), dict):
                raw_top = c["logprobs"].get("top_logprobs")
                if isinstance(raw_top, list):
                    top = [{str(k): float(v) for k, v in (d or {}).items()} for d in raw_top]
            completions.append(Completion(text, int(counts[i]), reason,  # type: ignore[arg-type]
                                          parsed[i][1] if params.logprobs is not None else None, stop, top))
        # The OpenAI usage counts an n-sample prompt once; every sequence processes it, so it is charged
        # once per sequence. The server's cached count is the first sequence's (vLLM); its siblings find
        # at least that much cached, so n times it is a lower bound on what the cache served.
        prompt_tokens = usage.get("prompt_tokens")
        details = usage.get("prompt_tokens_details") or {}
        n = len(completions)
        return GenerationResult(
            completions=completions,
            prompt_tokens=n * (int(prompt_tokens) if prompt_tokens is not None else self.count_tokens(prompt)),
            cached_prompt_tokens=n * int(details.get("cached_tokens") or 0),
        )

    def _tokenizer(self) -> Any:
        if self._tok is None and self.config.tokenizer:
            self._tok = _load_tokenizer(self.config.tokenizer)
        return self._tok

    def render_prompt(self, problem: Problem) -> str:
        """Apply the local tokenizer's chat template, since the completions endpoint takes raw text."""
        tok = self._tokenizer()
        if tok is None or not getattr(tok, "chat_template", None):
            return problem.prompt  # base models have no template: the prompt is already the text
        messages = [{"role": "system", "content": problem.system}] if problem.system else []
        messages.append({"role": "user", "content": problem.prompt})
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        """Exact count with the local tokenizer; without one, an upper bound of the server's count.

        The bound is the UTF-8 byte length plus `SPECIAL_TOKEN_ALLOWANCE`: a byte-level BPE token (GPT-2,
        Llama 3, Qwen) or a SentencePiece piece with byte fallback never covers less than one byte, so
        caps reserved with it hold whatever the server counts, at the price of reserving more (about 4x
        for English text). Configure `tokenizer` for exact counts.
        """
        tok = self._tokenizer()
        if tok is None:
            return len(text.encode("utf-8")) + SPECIAL_TOKEN_ALLOWANCE
        return len(tok.encode(text, add_special_tokens=False))

    async def aclose(self) -> None:
        """Close the HTTP connection pool; a later request opens a new one."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
