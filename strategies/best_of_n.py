"""Best-of-N: sample N, then pick by majority vote, by verifier score, or by weighted majority.

The selection rules follow Snell et al. / Liu et al.: "verifier" takes the
candidate with the best aggregated score, "weighted" sums each answer's scores.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from strategies.base import Outcome, SampledStrategy, SampledStrategyConfig, samples_for_budget
from ttc.core.context import SearchContext
from ttc.core.aggregation import Aggregation, aggregate
from ttc.core.types import Trajectory
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
    stop_at_score: float | None = Field(
        None, ge=0.0, le=1.0, description="Adaptive: sample in rounds of round_size, score each round, and stop once "
        "a candidate scores at least this (1.0 with code_exec: it passes every public test); None: one round of N.")
    round_size: int = Field(4, ge=1, le=4096, description="With stop_at_score: samples per round.")

    @model_validator(mode="after")
    def _rounds_or_forcing(self):
        if self.stop_at_score is not None and self.budget_forcing is not None:
            raise ValueError("stop_at_score (rounds of plain samples) and budget_forcing cannot be combined; "
                             "give one of them")
        return self


class BestOfN(SampledStrategy):
    name = "best_of_n"
    Config = BestOfNConfig

    def needs_scorer(self) -> bool:
        return self.config.selection != "majority" or self.config.stop_at_score is not None

    async def _rounds(self, ctx: SearchContext, n: int, logprobs: int | None) -> list[Trajectory]:
        """Adaptive sampling: rounds of round_size, each scored at once; stop at the first good enough
        candidate (easy problems cost a round, hard ones the budget) or when N are drawn or the budget ends."""
        c = self.config
        candidates: list[Trajectory] = []
        while len(candidates) < n and not ctx.ledger.exhausted():
            drawn = await ctx.sample(c.params(min(c.round_size, n - len(candidates)), logprobs=logprobs))
            if not drawn:
                break
            rows = await ctx.score(drawn, final_only=c.aggregation == "last")
            if rows is None:  # the verifier budget is spent: no more rounds can be judged
                candidates += drawn
                break
            for t, row in zip(drawn, rows):
                t.step_scores = list(row)
            candidates += drawn
            best = max(aggregate(row, c.aggregation) for row in rows)
            ctx.record("round", samples=len(drawn), best_score=round(best, 6))
            if best >= c.stop_at_score:
                break
        return candidates

    def selection(self) -> str:
        return self.config.selection

    def verifier_weight(self) -> float:
        return self.config.verifier_weight

    async def run(self, ctx: SearchContext) -> Outcome:
        c = self.config
        n = samples_for_budget(c.n, c.sample_tokens(), ctx.ledger.budget)
        logprobs = 0 if self.needs_scorer() and ctx.scorer is not None and ctx.scorer.needs_logprobs else None
        ctx.record("sample", n=n, max_tokens=c.max_tokens)
        if c.stop_at_score is None:
            candidates = await self.draw(ctx, logprobs)
            choice = await choose(ctx, candidates, c.selection, c.aggregation, verifier_weight=c.verifier_weight)
        else:
            candidates = await self._rounds(ctx, n, logprobs)
            choice = await choose(ctx, candidates, c.selection, c.aggregation, rescore=False,
                                  verifier_weight=c.verifier_weight)
        metrics = {"samples_requested": n, "samples": len(candidates), "selection": choice.selection}
        if choice.votes is not None:
            metrics["votes"] = choice.votes
        return Outcome(choice.answer, choice.best, candidates, metrics)
