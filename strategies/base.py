"""What strategies that draw N whole samples share: the N option and how a budget sizes it.

The Strategy protocol itself (hooks, capabilities, Outcome) is declared in
`ttc.core.plugins`; it is re-exported here because plugin authors subclass it
from this address.
"""
from __future__ import annotations

from pydantic import Field, model_validator

from ttc.core.budget import Budget
from ttc.core.context import SearchContext
from ttc.core.config import SamplingOptions
from ttc.core.errors import BudgetError, ConfigError
from ttc.core.plugins import Outcome, Strategy
from ttc.core.types import Trajectory
from strategies.thinking import ForcingOptions, force_thinking

#: Most requests a budget-sized strategy makes to spend what its first request left.
MAX_ROUNDS = 12

__all__ = ["Outcome", "SampledStrategy", "SampledStrategyConfig", "Strategy", "samples_for_budget"]


class SampledStrategyConfig(SamplingOptions):
    """Options of strategies that draw N whole samples."""

    n: int | None = Field(None, ge=1, le=4096, description="Samples to draw; None = as many as the budget pays for.")
    budget_forcing: ForcingOptions | None = Field(
        None, description="s1 budget forcing: think at least min_thinking_tokens (a continuation word appended when "
        "the model ends early), at most max_thinking_tokens, then the answer is forced. max_tokens stays the most "
        "a sample generates (thinking and answer): without max_thinking_tokens the thinking gets what it leaves "
        "after answer_tokens; without max_tokens, max_tokens follows from them.")

    @model_validator(mode="after")
    def _resolve_forcing(self):
        f = self.budget_forcing
        if f is not None:
            explicit = "max_tokens" in self.model_fields_set
            resolved = f.within(self.max_tokens if explicit or f.max_thinking_tokens is None
                                else f.max_thinking_tokens + f.answer_tokens, explicit=explicit)
            # Stored resolved (without re-validating the model): one cap, whichever field gave it.
            self.__dict__["budget_forcing"] = resolved
            self.__dict__["max_tokens"] = resolved.sample_tokens() if not explicit else self.max_tokens
        return self

    def sample_tokens(self) -> int:
        """Most generated tokens of one sample: what a budget is divided by to size N."""
        return self.budget_forcing.sample_tokens() if self.budget_forcing is not None else self.max_tokens


class SampledStrategy(Strategy):
    """A strategy whose width is N samples: a budget that cannot pay for one is refused up front."""

    Config = SampledStrategyConfig
    reuses_probe = True

    def check(self, budget: Budget, has_scorer: bool) -> None:
        super().check(budget, has_scorer)
        c = self.config
        samples_for_budget(c.n, c.sample_tokens(), budget)  # raises if it cannot pay for one
        if c.budget_forcing is not None and budget.generated_tokens is not None \
                and budget.generated_tokens < c.budget_forcing.answer_tokens:
            raise BudgetError(f"budget={budget.generated_tokens} generated tokens cannot pay for one forced answer "
                              f"(budget_forcing.answer_tokens={c.budget_forcing.answer_tokens})")

    async def draw(self, ctx: SearchContext, logprobs: int | None = None) -> list[Trajectory]:
        """The strategy's samples: `n` in one request when given; else as many as the budget pays for.

        Sized by the budget alone, a first request takes budget // max_tokens samples (each reserved
        at full length: the cap is hard), and samples usually stop well short of max_tokens. So the
        rest is drawn in further rounds while a full-length sample still fits, and a last shorter one
        where what is left is at least twice the longest sample seen: the budget is spent, not
        stranded. At most MAX_ROUNDS requests, one after the other.
        """
        c = self.config
        if c.budget_forcing is not None:  # one batch of forced samples, sized at their full length
            return await force_thinking(ctx, samples_for_budget(c.n, c.sample_tokens(), ctx.ledger.budget), c,
                                        c.budget_forcing, logprobs)
        if c.n is not None:
            return await ctx.sample(c.params(c.n, logprobs=logprobs))
        samples: list[Trajectory] = []
        rounds = 0
        for rounds in range(MAX_ROUNDS):
            left = ctx.ledger.generated_left()
            k = left // c.max_tokens if left is not None else 0
            longest = max((t.num_tokens for t in samples), default=c.max_tokens)
            if k < 1 and samples and left is not None and left >= 2 * longest:
                k = 1  # the ledger shortens this one to what is left, which the samples so far say is plenty
            if k < 1 or ctx.ledger.exhausted():
                break
            drawn = await ctx.sample(c.params(k, logprobs=logprobs))
            if not drawn:
                break
            samples += drawn
        else:
            rounds = MAX_ROUNDS
        ctx.record("sampled", samples=len(samples), rounds=rounds)
        return samples


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
