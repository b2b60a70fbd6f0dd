"""Best-of-N: sample N, then pick by majority vote, by verifier score, or by weighted majority.

The selection rules follow Snell et al. / Liu et al.: "verifier" takes the
candidate with the best aggregated score, "weighted" sums each answer's scores.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from strategies.base import Outcome, SampledStrategyConfig, Strategy, samples_for_budget
from strategies.selection import best_scored, majority_vote
from ttc.budget import Budget
from ttc.context import SearchContext
from ttc.errors import ConfigError
from verifiers.aggregation import Aggregation, aggregate


class BestOfNConfig(SampledStrategyConfig):
    """N samples and a rule to choose among them."""

    selection: Literal["majority", "verifier", "weighted"] = Field(
        "majority", description="majority vote, highest verifier score, or verifier-weighted majority."
    )
    aggregation: Aggregation = Field("last", description="How per-step scores become one: last, min, prod, mean.")


class BestOfN(Strategy):
    name = "best_of_n"
    Config = BestOfNConfig

    def check(self, budget: Budget, has_scorer: bool) -> None:
        super().check(budget, has_scorer)
        if self.config.selection != "majority" and not has_scorer:
            raise ConfigError(
                f"best_of_n.selection={self.config.selection!r} needs a verifier; "
                "set one (e.g. verifier='mean_logprob') or use selection='majority'"
            )

    async def run(self, ctx: SearchContext) -> Outcome:
        c = self.config
        n = samples_for_budget(c.n, c.max_tokens, ctx.ledger.budget)
        needs_scores = c.selection != "majority"
        logprobs = 0 if needs_scores and getattr(ctx.scorer, "needs_logprobs", False) else None
        ctx.record("sample", n=n, max_tokens=c.max_tokens)
        candidates = await ctx.sample(self.sampling_params(n, logprobs=logprobs))
        metrics = {"samples_requested": n, "samples": len(candidates), "selection": c.selection}
        if not needs_scores or not candidates:
            answer, best, votes = await ctx.offload(majority_vote, candidates)
            metrics["votes"] = votes
            return Outcome(answer, best, candidates, metrics)
        step_scores = await ctx.score(candidates)
        if step_scores is None:  # verifier budget spent: fall back to the vote rather than lose the samples
            ctx.record("selection_fallback", reason="verifier budget exhausted", selection="majority")
            answer, best, votes = await ctx.offload(majority_vote, candidates)
            metrics.update(votes=votes, selection="majority (verifier budget exhausted)")
            return Outcome(answer, best, candidates, metrics)
        scores = [aggregate(s, c.aggregation) for s in step_scores]
        ctx.record("scored", scores=[round(s, 6) for s in scores])
        if c.selection == "verifier":
            answer, best = best_scored(candidates, scores)
        else:
            answer, best, metrics["votes"] = await ctx.offload(majority_vote, candidates, scores)
        return Outcome(answer, best, candidates, metrics)
