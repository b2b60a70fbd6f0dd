"""The engine's own configuration: which backend and scorer, which model, how many problems at once."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from ttc.core.config import StrictModel
from workers.cluster import ClusterConfig


#: The strategy a solve runs when none is named (API, CLI).
DEFAULT_STRATEGY = "best_of_n"


class EngineOptions(StrictModel):
    """What a recipe and the engine share, declared once: a recipe's own section is these fields."""

    system_prompt: str | None = Field(
        "Solve the problem step by step. Put the final answer in \\boxed{}.",
        description="System message for chat models; None sends none.",
    )
    # 64 problems of N samples each already fill vLLM's batch (max_num_seqs, 256 by default).
    max_concurrent_problems: int = Field(64, ge=1, description="Problems solved at once; the backend batches them.")
    cluster: ClusterConfig | None = Field(
        None, description="Run the generator (and a model-holding scorer) as Ray actor pools; None = in-process.")


class EngineConfig(EngineOptions):
    """How the engine reaches its models."""

    backend: str = Field("vllm", description="Generator backend: 'vllm' (in-process), 'openai' (HTTP) or 'fake'.")
    model: str | None = Field(None, description="Checkpoint folder or model name; None = the embedded SmolLM2-135M-Instruct.")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="Options of the backend's own config.")
    verifier: str | None = Field(None, description="Scorer name from the verifier registry, e.g. 'mean_logprob'.")
    verifier_options: dict[str, Any] = Field(default_factory=dict, description="Options of the scorer's own config.")
    seed: int | None = Field(0, description="Seed for the strategies' own randomness (selection ties, resampling).")
