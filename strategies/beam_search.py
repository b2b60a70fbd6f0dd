"""PRM-guided beam search over reasoning steps (Snell et al.; search-and-learn's `beam_search`).

N live beams. Each search step: score all live candidates, keep the best N/M
by aggregated step score, and expand each kept beam M times, so N candidates
are live again. A candidate that finishes leaves the beam for the completed
pool, once: it is never copied to fill the beam. Optional lookahead rolls each
candidate k more steps at temperature 0 and ranks it by the rollout's score.
"""
from __future__ import annotations

from pydantic import Field

from strategies.step_search import BeamWidthConfig, BeamWidthSearch, top_k
from ttc.core.context import SearchContext
from ttc.core.types import Trajectory


class BeamSearchConfig(BeamWidthConfig):
    """N beams, M expansions per kept beam (N/M beams kept each step), optional lookahead."""

    lookahead: int = Field(0, ge=0, le=10, description="Extra greedy steps rolled out to rank a candidate.")


class BeamSearch(BeamWidthSearch):
    name = "beam_search"
    Config = BeamSearchConfig

    async def search(self, ctx: SearchContext, n: int) -> tuple[list[Trajectory], list[Trajectory], dict]:
        c = self.config
        keep = n // c.beam_width
        completed, live = await self.roots(ctx, n)
        frontier: list[Trajectory] = []
        step = 0
        while live:
            step += 1
            scores = await self.ranking_scores(ctx, live, completed)
            if scores is None:  # verifier budget spent: what finished is still kept
                self.bank_finished(completed, live)
                break
            self.bank_finished(completed, live)
            open_idx = [i for i, t in enumerate(live) if not t.finished]
            frontier = [live[i] for i in open_idx]  # scored and live: the finalists if none finishes
            # The beam shrinks as trajectories finish: they are kept once, never copied back in,
            # and the live width never exceeds what is left of N.
            left = n - len(completed)
            slots = min(keep, -(-left // c.beam_width)) if left > 0 else 0
            kept_idx = [open_idx[j] for j in top_k([live[i] for i in open_idx], [scores[i] for i in open_idx], slots)]
            kept = [live[i] for i in kept_idx]
            self.record_step(ctx, step, live, scores, {t.node_id for t in kept}, kept_beams=len(kept), left=left)
            if not kept:
                break
            counts = [c.beam_width] * len(kept)
            counts[-1] = left - (len(kept) - 1) * c.beam_width if left < len(kept) * c.beam_width else c.beam_width
            children = await self.extend(ctx, kept, counts)
            live = [t for group in children for t in group]
        metrics = {"width": n, "beam_width": c.beam_width, "steps_searched": step}
        return completed, frontier, metrics

    async def ranking_scores(self, ctx: SearchContext, live: list[Trajectory], completed: list[Trajectory]
                             ) -> list[float] | None:
        """Each candidate's score: its own, or (with lookahead) that of its greedy k-step rollout.

        Lookahead costs k extra generate calls per search step (one per rollout step, for all
        candidates at once) but still one scoring call. A candidate takes its own step scores from
        its rollout (the rollout's first steps are the candidate's); a rollout that finishes is a
        paid-for solution and joins the completed trajectories.
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
        if scores is None:
            return None
        for node, rollout in zip(live, rollouts):
            if rollout is not node:
                node.step_scores = list(rollout.step_scores[: len(node.steps)])
        self.bank_finished(completed, [r for r, t in zip(rollouts, live) if r is not t])
        ctx.record("lookahead", steps=self.config.lookahead,
                   rollouts=[{"of": t.node_id, "rollout": r.node_id} for t, r in zip(live, rollouts)])
        return scores
