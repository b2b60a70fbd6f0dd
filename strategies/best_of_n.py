"""Best-of-N: sample N, then pick by majority vote, by verifier score, or by weighted majority.

The selection rules follow Snell et al. / Liu et al.: "verifier" takes the
candidate with the best aggregated score, "weighted" sums each answer's scores.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from strategies.base import Outcome, SampledStrategy, SampledStrategyConfig, samples_for_budget
from ttc.core.context import SearchContext
from ttc.core.aggregation import Aggregation
from ttc.core.selection import choose


class BestOfNConfig(SampledStrategyConfig):
    """N samples and a rule to choose among them."""

    selection: Literal["majority", "verifier", "weighted", "combined"] = Field(
        "majority", description="majority vote, highest verifier score, verifier-weighted majority, or votes and "
        "verifier combined (log votes + verifier_weight x logit of the mean score per answer)."
    )
    verifier_weight: float = Field(1.0, ge=0.0, le=1000.0,
                                   description="selection 'combined': weight g of the verifier's logit against log votes.")
    aggregation: Aggregation = Field("last", description="How per-step scores become one: last, min, prod, mean.")


class BestOfN(SampledStrategy):
    name = "best_of_n"
    Config = BestOfNConfig

    def needs_scorer(self) -> bool:
        return self.config.selection != "majority"

    def selection(self) -> str:
        return self.config.selection

    def verifier_weight(self) -> float:
        return self.config.verifier_weight

    async def run(self, ctx: SearchContext) -> Outcome:
        c = self.config
        n = samples_for_budget(c.n, c.max_tokens, ctx.ledger.budget)
        logprobs = 0 if self.needs_scorer() and ctx.scorer is not None and ctx.scorer.needs_logprobs else None
        ctx.record("sample", n=n, max_tokens=c.max_tokens)
        candidates = await self.draw(ctx, logprobs)
        choice = await choose(ctx, candidates, c.selection, c.aggregation, verifier_weight=c.verifier_weight)
        metrics = {"samples_requested": n, "samples": len(candidates), "selection": choice.selection}
        if choice.votes is not None:
            metrics["votes"] = choice.votes
        return Outcome(choice.answer, choice.best, candidates, metrics)
