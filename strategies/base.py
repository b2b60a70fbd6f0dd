"""What strategies that draw N whole samples share: the N option and how a budget sizes it.

The Strategy protocol itself (hooks, capabilities, Outcome) is declared in
`ttc.core.plugins`; it is re-exported here because plugin authors subclass it
from this address.
"""
from __future__ import annotations

from pydantic import Field

from ttc.core.budget import Budget
from ttc.core.config import SamplingOptions
from ttc.core.errors import BudgetError, ConfigError
from ttc.core.plugins import Outcome, Strategy

__all__ = ["Outcome", "SampledStrategy", "SampledStrategyConfig", "Strategy", "samples_for_budget"]


class SampledStrategyConfig(SamplingOptions):
    """Options of strategies that draw N whole samples."""

    n: int | None = Field(None, ge=1, le=4096, description="Samples to draw; None = as many as the budget pays for.")


class SampledStrategy(Strategy):
    """A strategy whose width is N samples: a budget that cannot pay for one is refused up front."""

    Config = SampledStrategyConfig
    reuses_probe = True

    def check(self, budget: Budget, has_scorer: bool) -> None:
        super().check(budget, has_scorer)
        samples_for_budget(self.config.n, self.config.max_tokens, budget)  # raises if it cannot pay for one


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
