"""Configuration: pydantic models, and one way to turn their errors into ConfigError.

Each component owns its config class (strategies, backends, scorers); this
module holds the engine's own config, the sampling options shared by
strategies, and `validate`, which reports every problem at once with its field
path and bad value, never a traceback.
"""
from __future__ import annotations

import difflib
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttc.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _describe(err: dict[str, Any], model: type[BaseModel], prefix: str) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    path = f"{prefix}.{loc}" if prefix else loc
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        close = difflib.get_close_matches(name, list(model.model_fields), n=1) if len(err["loc"]) == 1 else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        valid = f"; valid options are {sorted(model.model_fields)}" if len(err["loc"]) == 1 else ""
        return f"unknown option {path!r}{hint}{valid}"
    return f"{path}: {err['msg']}, got {err.get('input')!r}"


def validate(model: type[M], data: dict[str, Any] | None, prefix: str = "") -> M:
    """Build `model` from `data`, or raise one ConfigError naming every bad field and value."""
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError([_describe(e, model, prefix) for e in exc.errors()]) from None


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """`["n=8", "selection=majority", "stop=[\"\\n\"]"]` -> {"n": 8, ...}; values are YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


class SamplingOptions(StrictModel):
    """Sampling settings shared by every strategy that samples."""

    max_tokens: int = Field(256, ge=1, le=131072, description="Most tokens generated per sample.")
    temperature: float = Field(0.8, ge=0.0, le=5.0, description="Softmax temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a sample.")


class PoolConfig(StrictModel):
    """One pool of identical replicas and where Ray may place them."""

    replicas: int = Field(1, ge=1, le=1024, description="Actors in the pool.")
    num_cpus: float = Field(1.0, ge=0.0, description="CPUs Ray reserves per replica.")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per replica (set tensor_parallel_size in the backend "
                                                     "options to match).")
    max_in_flight: int = Field(256, ge=1, description="Requests a replica takes at once; more wait (backpressure).")
    runtime_env: dict[str, Any] = Field(default_factory=dict,
                                        description="Ray runtime env per replica, e.g. {env_vars: {OMP_NUM_THREADS: '2'}}.")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources per replica.")


class ClusterConfig(StrictModel):
    """How to reach the cluster and how to size the pools."""

    address: str | None = Field(
        "auto", description="'auto' = the running cluster (RAY_ADDRESS or `ray start`), 'local' = start a "
                            "private one in this process, or 'HOST:PORT' / 'ray://HOST:10001'.")
    namespace: str = Field("ttc", description="Ray namespace of the pools' actors.")
    generator: PoolConfig = Field(default_factory=PoolConfig, description="The generator pool.")
    scorer: PoolConfig = Field(default_factory=PoolConfig,
                               description="The scorer pool (for verifiers that hold a model, e.g. PRMs).")
    max_attempts: int = Field(3, ge=1, le=20, description="Tries per request across replicas when replicas die.")
    replica_start_timeout_s: float = Field(600.0, gt=0, description="Seconds a new replica may take to load.")
    request_timeout_s: float | None = Field(
        None, gt=0, description="Seconds one attempt may take; past it the replica is taken as hung, replaced, and "
                                "the request retried elsewhere. None = no limit.")
    num_cpus: int | None = Field(None, ge=1, description="With address='local': CPUs of the private cluster.")


class EngineConfig(StrictModel):
    """How the engine reaches its models."""

    backend: str = Field("vllm", description="Generator backend: 'vllm' (in-process), 'openai' (HTTP) or 'fake'.")
    model: str | None = Field(None, description="Checkpoint folder or model name; None = the embedded SmolLM2-135M-Instruct.")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="Options of the backend's own config.")
    verifier: str | None = Field(None, description="Scorer name from the verifier registry, e.g. 'mean_logprob'.")
    verifier_options: dict[str, Any] = Field(default_factory=dict, description="Options of the scorer's own config.")
    system_prompt: str | None = Field(
        "Solve the problem step by step. Put the final answer in \\boxed{}.",
        description="System message for chat models; None sends none.",
    )
    seed: int | None = Field(0, description="Seed for the strategies' own randomness (selection ties, resampling).")
    max_concurrent_problems: int = Field(256, ge=1, description="Problems solved at once; the backend batches them.")
    cluster: ClusterConfig | None = Field(
        None, description="Run the generator (and a model-holding scorer) as Ray actor pools; None = in-process.")
