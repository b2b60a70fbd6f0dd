"""PRM-guided beam search over reasoning steps (Snell et al.; search-and-learn's `beam_search`).

N live beams. Each search step: score all live candidates, keep the best N/M
by aggregated step score, and expand each kept beam M times, so N candidates
are live again. A candidate that finishes leaves the beam for the completed
pool, once: it is never copied to fill the beam. Optional lookahead rolls each
candidate k more steps at temperature 0 and ranks it by the rollout's score.
"""
from __future__ import annotations

from pydantic import Field, model_validator

from strategies.base import Outcome
from strategies.step_search import StepSearch, StepSearchConfig, require_divides, top_k
from ttc.context import SearchContext
from ttc.types import Trajectory


class BeamSearchConfig(StepSearchConfig):
    """N beams, M expansions per kept beam (N/M beams kept each step), optional lookahead."""

    beam_width: int = Field(4, ge=1, description="M: expansions per kept beam; N/M beams are kept each step.")
    lookahead: int = Field(0, ge=0, le=10, description="Extra greedy steps rolled out to rank a candidate.")

    @model_validator(mode="after")
    def _divides(self):
        if self.n is not None:
            require_divides(self.n, self.beam_width, "n", "beam_width")
        return self


class BeamSearch(StepSearch):
    name = "beam_search"
    Config = BeamSearchConfig
    width_multiple_of = "beam_width"

    async def run(self, ctx: SearchContext) -> Outcome:
        c = self.config
        n = self.width(ctx.ledger.budget)
        keep = n // c.beam_width
        completed: list[Trajectory] = []
        (live,) = await self.extend(ctx, [None], [n])
        frontier, step = live, 0
        while live:
            step += 1
            scores = await self.ranking_scores(ctx, live)
            if scores is None:
                break
            finished = [t for t in live if t.finished]
            completed.extend(finished)
            open_idx = [i for i, t in enumerate(live) if not t.finished]
            # The beam shrinks as trajectories finish: they are kept once, never copied back in.
            left = n - len(completed)
            slots = min(keep, -(-left // c.beam_width)) if left > 0 else 0
            kept_idx = [open_idx[j] for j in top_k([live[i] for i in open_idx], [scores[i] for i in open_idx], slots)]
            kept = [live[i] for i in kept_idx]
            self.record_step(ctx, step, live, scores, {t.node_id for t in kept}, kept_beams=len(kept))
            if not kept:
                break
            frontier = kept
            children = await self.extend(ctx, kept, [c.beam_width] * len(kept))
            live = [t for group in children for t in group]
        metrics = {"width": n, "beam_width": c.beam_width, "steps_searched": step}
        return await self.finish(ctx, completed, [t for t in (live or frontier) if not t.finished], metrics)

    async def ranking_scores(self, ctx: SearchContext, live: list[Trajectory]) -> list[float] | None:
        """Each candidate's score: its own, or (with lookahead) that of its greedy k-step rollout.

        Either way one scoring call per search step; a finished candidate is its own rollout.
        """
        if not self.config.lookahead:
            return await self.scores(ctx, live)
        rollouts = list(live)
        for _ in range(self.config.lookahead):
            todo = [i for i, t in enumerate(rollouts) if not t.finished]
            if not todo:
                break
            grown = await self.extend(ctx, [rollouts[i] for i in todo], [1] * len(todo), greedy=True)
            for i, g in zip(todo, grown):
                if g:
                    rollouts[i] = g[0]
        scores = await self.scores(ctx, rollouts)
        if scores is not None:
            ctx.record("lookahead", steps=self.config.lookahead,
                       rollouts=[{"of": t.node_id, "rollout": r.node_id} for t, r in zip(live, rollouts)])
        return scores
