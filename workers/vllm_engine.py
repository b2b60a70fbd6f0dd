"""What every in-process vLLM engine shares: its options, its environment, its start-up.

The generator (`workers.vllm_local`) and the PRM scorer (`verifiers.prm_vllm`) each run one
`AsyncLLM`. The engine options they have in common are declared once here, with one description,
one bound and one default; the environment vLLM reads at import (CPU builds need a few settings)
is set by one function; and the shared options become `AsyncEngineArgs` keywords in one place,
to which each caller adds its own (the generator its batching and caching, the PRM its pooling).

Nothing here imports vLLM at module level: `import workers.vllm_engine` stays cheap.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import struct
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from ttc.core.config import StrictModel

_MODEL = Field(
    min_length=1,
    description="Checkpoint folder or hub name; the generator's is set by the engine from EngineConfig.model, "
    "a PRM's must be given.",
)
#: The `model` option where it has no default (a PRM must be named; the generator's is filled in by
#: the engine). Same bound and description as `VLLMEngineOptions.model`.
RequiredModel = Annotated[str, _MODEL]
#: `max_model_len`, declared once; each engine gives its own default where it uses it.
MaxModelLen = Annotated[int, Field(
    ge=16,
    description="Longest sequence in tokens: prompt + completion for the generator, the whole scored input for a "
    "PRM; a longer one is refused with an error.",
)]
#: `cpu_kv_cache_gb`, declared once; each engine gives its own default where it uses it.
CpuKVCacheGB = Annotated[int, Field(
    ge=1,
    description="KV cache size in GiB on CPU builds (VLLM_CPU_KVCACHE_SPACE), unless already set in the environment: "
    "the variable is process-wide, so the first engine started in a process sets it.",
)]


class VLLMEngineOptions(StrictModel):
    """Options of one in-process vLLM engine, shared by the generator's and the PRM's configs."""

    model: Annotated[str | None, _MODEL] = None
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = Field(
        "auto", description="Weight dtype; 'auto' lets vLLM choose from the checkpoint's.")
    max_model_len: MaxModelLen = 2048
    enforce_eager: bool | None = Field(None, description="Skip graph capture; None = True on CPU (starts ~4x faster).")
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="Fraction of GPU memory this engine may take (GPU only).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one replica spans (GPU only).")
    cpu_kv_cache_gb: CpuKVCacheGB = 4


def is_cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build (`vllm-cpu`), which needs its own settings."""
    try:
        importlib.metadata.version("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def offline_for_local_folder(model: str | None) -> None:
    """Keep transformers and vLLM off the hub for a local checkpoint folder (none is reachable here)."""
    if model and Path(model).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def prepare_environment(options: VLLMEngineOptions, cpu: bool) -> None:
    """Set what vLLM reads at import: CPU-build settings, no usage stats, offline for a local folder.

    Explicit user settings win (only unset variables are set); call it before importing vLLM.
    """
    if cpu:
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # with 2 cores, reserving one halves speed
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kv_cache_gb))
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    offline_for_local_folder(options.model)


def engine_args(options: VLLMEngineOptions, cpu: bool) -> dict[str, Any]:
    """The shared options as `AsyncEngineArgs` keywords; callers add their own engine's keywords."""
    args: dict[str, Any] = dict(
        model=options.model, dtype=options.dtype, max_model_len=options.max_model_len,
        enforce_eager=options.enforce_eager if options.enforce_eager is not None else cpu,
        tensor_parallel_size=options.tensor_parallel_size, disable_log_stats=True,
    )
    if not cpu:
        args["gpu_memory_utilization"] = options.gpu_memory_utilization
    return args


def start_engine(options: VLLMEngineOptions, cpu: bool, extra_args: dict[str, Any],
                 error: type[Exception], label: str = ""):
    """Prepare the environment and start an `AsyncLLM` on the shared options plus `extra_args`.

    vLLM raises many kinds of exception when it cannot start; they become one `error` whose message
    names the model (`label` goes before it, e.g. "the PRM ").
    """
    prepare_environment(options, cpu)
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    try:
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args(options, cpu), **extra_args))
    except Exception as exc:  # the user needs one clear message
        raise error(f"vLLM could not start {label}model={options.model!r}: {type(exc).__name__}: {exc}") from exc


def request_errors() -> tuple[type[Exception], tuple[type[Exception], ...]]:
    """The installed vLLM's exception types for (a dead engine, a refused request); imports vLLM."""
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        from vllm.exceptions import VLLMClientError  # recent vLLM: bad requests
    except ImportError:  # older vLLM raises plain ValueError
        VLLMClientError = ValueError
    return EngineDeadError, (ValueError, VLLMClientError)


def count_parameters(model_dir: str) -> int | None:
    """Parameter count from the safetensors headers, without loading weights, for FLOPs estimates.

    None when `model_dir` is not a local folder of safetensors files, or a header cannot be read
    (the count only feeds the early FLOPs estimate; loading the model reports a broken file).
    """
    files = sorted(Path(model_dir).glob("*.safetensors")) if Path(model_dir).is_dir() else []
    total = 0
    try:
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
    except Exception:  # truncated file, bad JSON, unexpected layout: all mean "unknown"
        return None
    return total or None
