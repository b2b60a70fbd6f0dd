"""REBASE: reward-balanced search (Wu et al., "Inference Scaling Laws").

Every search step gives each live node a share of the remaining width that
follows the softmax of its score over a temperature, so promising nodes expand
more and weak ones are pruned (share 0) without a hard cut-off. Finished
solutions shrink the remaining width. The answer is a score-weighted majority
vote over the finished solutions.
"""
from __future__ import annotations

import math
from typing import Sequence

from pydantic import Field

from strategies.step_search import StepSearch, StepSearchConfig
from ttc.core.context import SearchContext
from ttc.core.types import Trajectory


class RebaseConfig(StepSearchConfig):
    """Width N shared out by softmax(score / temperature) at every step."""

    balance_temperature: float = Field(0.2, gt=0.0, description="Softmax temperature of the width shares.")


def softmax(scores: Sequence[float], temperature: float) -> list[float]:
    top = max(scores)
    exps = [math.exp((s - top) / temperature) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def allocate(weights: Sequence[float], width: int) -> list[int]:
    """Integer shares of `width` proportional to `weights`, summing exactly to `width`.

    Largest-remainder rounding: each share is within one of width x weight, which
    is as close to the softmax as whole expansions can be.
    """
    raw = [w * width for w in weights]
    shares = [math.floor(r) for r in raw]
    left = width - sum(shares)
    by_remainder = sorted(range(len(raw)), key=lambda i: (-(raw[i] - shares[i]), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


class Rebase(StepSearch):
    name = "rebase"
    Config = RebaseConfig

    async def search(self, ctx: SearchContext, n: int) -> tuple[list[Trajectory], list[Trajectory], dict]:
        c = self.config
        completed, live = await self.roots(ctx, n)
        frontier: list[Trajectory] = []
        step = 0
        while live:
            step += 1
            scores = await self.scores(ctx, live)
            self.bank_finished(completed, live)  # kept even when the verifier budget is spent
            if scores is None:
                break
            open_nodes = [(t, s) for t, s in zip(live, scores) if not t.finished]
            frontier = [t for t, _ in open_nodes]  # scored and live: the finalists if none finishes
            width = n - len(completed)  # finished solutions shrink the width
            if not open_nodes or width <= 0:
                self.record_step(ctx, step, live, scores, set(), width=max(width, 0), shares=[])
                break
            weights = softmax([s for _, s in open_nodes], c.balance_temperature)
            shares = allocate(weights, width)
            kept = {t.node_id for (t, _), k in zip(open_nodes, shares) if k > 0}
            self.record_step(ctx, step, live, scores, kept, width=width,
                             shares=[{"id": t.node_id, "weight": round(w, 6), "share": k}
                                     for (t, _), w, k in zip(open_nodes, weights, shares)])
            children = await self.extend(ctx, frontier, shares)
            live = [t for group in children for t in group]
        metrics = {"width": n, "steps_searched": step}
        return completed, frontier, metrics
