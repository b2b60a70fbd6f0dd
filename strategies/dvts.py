"""Diverse verifier tree search (Beeching et al., search-and-learn's DVTS).

N/M independent subtrees. Each search step expands every subtree's single live
node M times and keeps that subtree's best child; no subtree ever sees another's
nodes, which keeps the searches diverse where a shared beam collapses onto one
line of reasoning. Finished children join the completed trajectories; a subtree whose
best child finished is done.
"""
from __future__ import annotations

from strategies.step_search import BeamWidthConfig, BeamWidthSearch, top_k
from ttc.core.context import SearchContext
from ttc.core.types import Trajectory


class DVTSConfig(BeamWidthConfig):
    """N/M independent subtrees, each expanding its best node M times per step."""


class DVTS(BeamWidthSearch):
    name = "dvts"
    Config = DVTSConfig

    async def search(self, ctx: SearchContext, n: int) -> tuple[list[Trajectory], list[Trajectory], dict]:
        c = self.config
        m = c.beam_width
        subtrees = n // m
        # Each subtree starts from its own root sample.
        (roots,) = await self.extend(ctx, [None], [subtrees])
        subtree_of = {t.node_id: k for k, t in enumerate(roots)}
        completed: list[Trajectory] = []
        root_scores = await self.scores(ctx, roots)  # roots are scored like every other node
        self.bank_finished(completed, roots)
        if root_scores is not None:
            self.record_step(ctx, 0, roots, root_scores, {t.node_id for t in roots if not t.finished},
                             subtrees=[subtree_of[t.node_id] for t in roots])
        heads: list[Trajectory | None] = [None if t.finished else t for t in roots]
        if root_scores is None:
            heads = []
        step = 0
        stalled: list[Trajectory] = []
        while any(h is not None for h in heads):
            step += 1
            live_k = [k for k, h in enumerate(heads) if h is not None]
            children = await self.extend(ctx, [heads[k] for k in live_k], [m] * len(live_k))
            flat = [t for group in children for t in group]
            if not flat:
                break
            scores = await self.scores(ctx, flat)
            if scores is None:  # verifier budget spent: what finished is still kept
                self.bank_finished(completed, flat)
                break
            by_id = dict(zip((t.node_id for t in flat), scores))
            kept = set()
            for k, group in zip(live_k, children):
                for t in group:
                    subtree_of[t.node_id] = k
                if not group:
                    stalled.append(heads[k])  # the budget could not pay for this subtree's next step
                    heads[k] = None
                    continue
                self.bank_finished(completed, group)
                best = group[top_k(group, [by_id[t.node_id] for t in group], 1)[0]]
                kept.add(best.node_id)
                heads[k] = None if best.finished else best
            self.record_step(ctx, step, flat, scores, kept, subtrees=[subtree_of[t.node_id] for t in flat])
        last = [h for h in heads if h is not None] + stalled
        metrics = {"width": n, "subtrees": subtrees, "beam_width": m, "steps_searched": step}
        return completed, last or [t for t in roots if not t.finished], metrics
