"""Repeated sampling (Brown et al., "Large Language Monkeys").

Draw N independent samples in one request (they share prefill) and report
coverage — whether any sample is correct — when the reference is known. The
answer is the most common one, so the strategy is usable without a reference;
`best_of_n` is the strategy for choosing answers well.
"""
from __future__ import annotations

from strategies.base import Outcome, SampledStrategy, SampledStrategyConfig, samples_for_budget
from ttc.core.selection import select
from ttc.core.context import SearchContext


class RepeatedSamplingConfig(SampledStrategyConfig):
    """N samples; coverage reported when a reference answer is known."""


class RepeatedSampling(SampledStrategy):
    name = "repeated_sampling"
    Config = RepeatedSamplingConfig

    async def run(self, ctx: SearchContext) -> Outcome:
        n = samples_for_budget(self.config.n, self.config.sample_tokens(), ctx.ledger.budget)
        ctx.record("sample", n=n, max_tokens=self.config.max_tokens)
        candidates = await self.draw(ctx)
        vote = await ctx.offload(select, candidates, "majority")
        answer, best = vote.answer, vote.best
        metrics = {"samples_requested": n, "samples": len(candidates), "votes": vote.votes}
        if ctx.problem.reference is not None:
            metrics["coverage"] = any(c.correct for c in candidates)
            metrics["correct_samples"] = sum(bool(c.correct) for c in candidates)
        return Outcome(answer, best, candidates, metrics)
