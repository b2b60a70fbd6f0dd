"""What `ttc serve` runs: the engine, the default strategy and budget, and the server's limits.

A serve file is a recipe: its generator, verifier, sampling, strategy and budget become the
server's defaults (a list of strategies or budgets: the first), and its `serve:` section the
limits. Keys that only a run uses (dataset, output, seeds, ...) are accepted and ignored, so one
recipe can be both run and served.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from ttc.core.budget import Budget
from ttc.core.config import StrictModel, validate
from ttc.core.errors import ConfigError
from ttc.engine_config import EngineConfig, EngineOptions
from ttc.evaluation.recipe import GeneratorSpec, StrategySpec, VerifierSpec

#: Keys of a run recipe that mean nothing to a server.
RUN_ONLY = ("name", "dataset", "output", "seeds", "pooled_budget", "label", "mrt_label", "train", "evaluate_verifier")


class ServeOptions(StrictModel):
    """The `serve:` section: where it listens and what one request may ask for."""

    host: str = Field("127.0.0.1", description="Address to bind; any other than loopback requires an API key.")
    port: int = Field(8000, ge=0, le=65535, description="Port; 0 picks a free one.")
    api_key_env: str = Field("TTC_API_KEY", description="Environment variable holding the bearer token (when "
                             "--api-key is not given).")
    max_concurrent: int = Field(64, ge=1, le=65536, description="Requests searched at once (they share the engine's "
                                "batch); the others wait in the queue.")
    queue_size: int = Field(256, ge=0, le=1 << 20, description="Requests that may wait for a slot; beyond it the "
                            "server answers 429 with Retry-After.")
    retry_after_s: int = Field(1, ge=1, le=3600, description="Retry-After of a 429.")
    request_timeout_s: float = Field(600.0, gt=0, le=86400, description="Longest a request may take, queue included "
                                     "(then 504).")
    max_budget: int = Field(1 << 16, ge=1, description="Most generated tokens one request may ask for.")
    max_n: int = Field(16, ge=1, le=1024, description="Most choices (OpenAI's n) one request may ask for.")
    verifiers: list[str] | None = Field(None, description="Verifiers a request may name; None: the recipe's own and "
                                       "those that load no model (mean_logprob, self_eval).")
    progress_interval_s: float = Field(1.0, gt=0, le=60, description="Seconds between progress chunks of a stream.")
    shutdown_timeout_s: float = Field(30.0, ge=0, le=3600, description="On SIGTERM: how long in-flight requests may "
                                      "take to finish before the server stops anyway.")


class ServeConfig(EngineOptions):
    """A served engine: model, verifier, defaults and limits."""

    generator: GeneratorSpec = Field(default_factory=GeneratorSpec, description="Policy model and backend.")
    verifier: VerifierSpec | None = Field(None, description="Scorer available to requests (and the default one).")
    strategy: StrategySpec | list[StrategySpec] = Field(
        default_factory=lambda: StrategySpec(name="best_of_n"), description="Default strategy (a list: its first).")
    budget: int | dict[str, float] | list[int | dict[str, float]] = Field(
        1024, description="Default budget of a request that gives none (a list: its first).")
    sampling: dict[str, Any] = Field(default_factory=dict, description="Sampling options given to every strategy.")
    serve: ServeOptions = Field(default_factory=ServeOptions)

    @property
    def default_strategy(self) -> StrategySpec:
        return self.strategy[0] if isinstance(self.strategy, list) else self.strategy

    @property
    def default_budget(self) -> Budget:
        return Budget.coerce(self.budget[0] if isinstance(self.budget, list) else self.budget)

    def default_options(self) -> dict[str, Any]:
        return {**self.sampling, **self.default_strategy.options}

    def allowed_verifiers(self) -> set[str]:
        if self.serve.verifiers is not None:
            return set(self.serve.verifiers)
        return {"mean_logprob", "self_eval", *([self.verifier.name] if self.verifier else [])}

    def engine_config(self) -> EngineConfig:
        shared = {name: getattr(self, name) for name in EngineOptions.model_fields}
        return EngineConfig(**shared, backend=self.generator.backend, model=self.generator.model,
                            backend_options=self.generator.options,
                            verifier=self.verifier.name if self.verifier else None,
                            verifier_options=self.verifier.options if self.verifier else {})


def load_serve_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> ServeConfig:
    """The serve file (a recipe) with dotted overrides; without a file, the embedded model and defaults."""
    from ttc.evaluation.recipe import set_dotted

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"serve file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not a valid YAML recipe: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe must be a YAML mapping of keys, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k not in RUN_ONLY}
    for key, value in (overrides or {}).items():
        try:
            set_dotted(data, key, value)
        except (ValueError, IndexError, TypeError, AttributeError):
            raise ConfigError(f"override {key!r} does not fit the serve file's structure") from None
    config = validate(ServeConfig, data)
    config.default_budget  # a bad default budget is reported now, not on the first request
    return config


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
