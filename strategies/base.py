"""The Strategy interface: pure control flow over a SearchContext.

A strategy never imports a backend. It asks its context for samples and
scores (the context charges the ledger), and returns an Outcome: the chosen
answer and trajectory, every candidate, and figures worth reporting.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import Field

from ttc.budget import Budget
from ttc.config import SamplingOptions, validate
from ttc.context import SearchContext
from ttc.errors import BudgetError, ConfigError
from ttc.types import SamplingParams, Trajectory


@dataclass
class Outcome:
    answer: str | None
    best: Trajectory | None
    candidates: list[Trajectory]
    metrics: dict[str, Any] = field(default_factory=dict)


class SampledStrategyConfig(SamplingOptions):
    """Options of strategies that draw N whole samples."""

    n: int | None = Field(None, ge=1, le=4096, description="Samples to draw; None = as many as the budget pays for.")


class Strategy(abc.ABC):
    name: ClassVar[str]
    Config: ClassVar[type[SamplingOptions]]
    #: True when the strategy cannot run without a scorer.
    needs_scorer: ClassVar[bool] = False

    def __init__(self, config: SamplingOptions | None = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> "Strategy":
        """Validate user options; every bad field is reported at once."""
        return cls(validate(cls.Config, options, prefix=cls.name))

    def check(self, budget: Budget, has_scorer: bool) -> None:
        """Reject a run that cannot work before any compute is spent."""
        if self.needs_scorer and not has_scorer:
            raise ConfigError(f"strategy {self.name!r} needs a verifier; set one (e.g. verifier='mean_logprob')")
        if isinstance(self.config, SampledStrategyConfig):
            samples_for_budget(self.config.n, self.config.max_tokens, budget)  # raises if it cannot pay for one

    @abc.abstractmethod
    async def run(self, ctx: SearchContext) -> Outcome:
        """Spend the context's budget and pick an answer."""

    # ---- helpers shared by sampling strategies -------------------------------------------------
    def sampling_params(self, n: int, logprobs: int | None = None) -> SamplingParams:
        c = self.config
        return SamplingParams(n=n, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens,
                              stop=tuple(c.stop), logprobs=logprobs)


def samples_for_budget(n: int | None, max_tokens: int, budget: Budget) -> int:
    """N as given, or as many full-length samples as the generated-token budget pays for."""
    if n is not None:
        return n
    if budget.generated_tokens is None:
        raise ConfigError("n is required when the budget has no generated_tokens cap; pass n or an int budget")
    derived = budget.generated_tokens // max_tokens
    if derived < 1:
        raise BudgetError(
            f"budget={budget.generated_tokens} generated tokens cannot pay for one sample of "
            f"max_tokens={max_tokens}; raise the budget or lower max_tokens"
        )
    return derived
