"""Particle filtering over reasoning steps (Puri et al., "A probabilistic inference approach
to inference-time scaling of LLMs using particle-based Monte Carlo methods").

N particles are extended one step at a time; each is weighted by softmax of its
PRM score over a temperature, and the live population is resampled from those
weights (multinomial or systematic), so compute follows the likely-good partial
solutions while keeping some diversity. A particle that finishes leaves the
population for the completed trajectories (it is never extended again), and the live
population shrinks by one. Particle Gibbs repeats the filter, each time keeping
one reference trajectory (drawn by weight from the last run's finished particles)
alive at every step, so later runs refine around it.
"""
from __future__ import annotations

import random
from bisect import bisect_left
from itertools import accumulate
from typing import Literal, Sequence

from pydantic import Field

from strategies.rebase import softmax
from strategies.step_search import StepSearch, StepSearchConfig
from ttc.core.context import SearchContext
from ttc.core.types import Trajectory
from ttc.core.aggregation import aggregate


class ParticleFilteringConfig(StepSearchConfig):
    """N particles, softmax weights over a temperature, a resampling method, Gibbs iterations."""

    resampling: Literal["multinomial", "systematic"] = Field("systematic", description="How particles are resampled.")
    weight_temperature: float = Field(1.0, gt=0.0, description="Softmax temperature turning scores into weights.")
    gibbs_iterations: int = Field(0, ge=0, le=16, description="Extra particle-Gibbs runs around a reference particle.")


def resample(weights: Sequence[float], k: int, method: str, rng: random.Random) -> list[int]:
    """k indices drawn by `weights` (which sum to 1)."""
    if k <= 0:
        return []
    if method == "multinomial":
        return rng.choices(range(len(weights)), weights=weights, k=k)
    # Systematic: one uniform offset, k evenly spaced pointers — lower variance than multinomial.
    cumulative = list(accumulate(weights))
    cumulative[-1] = 1.0  # guard against rounding
    u0 = rng.random() / k
    return [min(bisect_left(cumulative, u0 + j / k), len(weights) - 1) for j in range(k)]


class ParticleFiltering(StepSearch):
    name = "particle_filtering"
    Config = ParticleFilteringConfig

    async def search(self, ctx: SearchContext, n: int) -> tuple[list[Trajectory], list[Trajectory], dict]:
        c = self.config
        if c.n is None and c.gibbs_iterations:
            n = max(1, n // (c.gibbs_iterations + 1))  # a budget-derived width is shared by every run
        completed: list[Trajectory] = []
        last_live: list[Trajectory] = []
        reference: Trajectory | None = None
        steps = 0
        for iteration in range(c.gibbs_iterations + 1):
            done, live, k = await self.filter(ctx, n, reference, iteration)
            completed.extend(done)
            last_live = live or last_live
            steps += k
            if iteration == c.gibbs_iterations or ctx.ledger.exhausted() or not done:
                break
            # The next run's reference: one finished particle, drawn by weight.
            weights = softmax([aggregate(t.step_scores, c.aggregation) for t in done], c.weight_temperature)
            reference = ctx.rng.choices(done, weights=weights, k=1)[0]
            ctx.record("gibbs_reference", iteration=iteration, id=reference.node_id)
        metrics = {"particles": n, "resampling": c.resampling, "gibbs_iterations": c.gibbs_iterations,
                   "steps_searched": steps}
        return completed, last_live, metrics

    async def filter(self, ctx: SearchContext, n: int, reference: Trajectory | None, iteration: int
                     ) -> tuple[list[Trajectory], list[Trajectory], int]:
        """One particle-filter run: (finished particles, live particles at the end, steps).

        With a reference (particle Gibbs), its first t steps are particle 0 at step t: it is
        scored and may be resampled (so new particles branch off it), but it is never added to
        the completed trajectories again, since it is already among them.
        """
        c = self.config
        completed: list[Trajectory] = []
        # The reference's unfinished prefixes (1 .. len-1 steps) take part; the whole reference is
        # already among the completed trajectories and is neither rescored nor added again.
        ref_len = len(reference.steps) - 1 if reference is not None else 0
        prev_ref: Trajectory | None = None
        (live,) = await self.extend(ctx, [None], [n - (1 if ref_len else 0)])
        step = 0
        while live:
            step += 1
            ref = self.reference_prefix(ctx, reference, step, prev_ref) if step <= ref_len else None
            if ref is not None:
                live = [ref] + live
                prev_ref = ref
            scores = await self.scores(ctx, live)
            self.bank_finished(completed, [t for t in live if t is not ref])  # kept even if scoring stops
            if scores is None:
                break
            open_pairs = [(t, s) for t, s in zip(live, scores) if not t.finished]
            reserved = 1 if step < ref_len else 0  # the reference's next prefix takes one slot
            population = n - len(completed) - reserved
            if not open_pairs or population <= 0:
                self.record_step(ctx, step, live, scores, set(), iteration=iteration, resampling=c.resampling)
                break
            weights = softmax([s for _, s in open_pairs], c.weight_temperature)
            picks = resample(weights, population, c.resampling, ctx.rng)
            chosen = [open_pairs[i][0] for i in picks]
            self.record_step(ctx, step, live, scores, {t.node_id for t in chosen}, iteration=iteration,
                             resampling=c.resampling, weights=[round(w, 6) for w in weights],
                             resampled=[t.node_id for t in chosen])
            # Resampled copies of a live particle each grow their own next step, as the children of ONE
            # request with n = copies (they share its prefill), as beam search expands a beam.
            copies: dict[int, int] = {}
            for i in picks:
                copies[i] = copies.get(i, 0) + 1
            children = await self.extend(ctx, [open_pairs[i][0] for i in copies], list(copies.values()))
            live = [t for group in children for t in group]
        return completed, [t for t in live if not t.finished], step

    def reference_prefix(self, ctx: SearchContext, reference: Trajectory, step: int,
                         previous: Trajectory | None) -> Trajectory:
        """The reference trajectory cut to `step` steps (fewer than all), as a live particle."""
        steps = list(reference.steps[:step])
        # Token count of a cut prefix is not recorded per step: estimate it by its share of the text.
        share = len("".join(steps)) / max(1, len(reference.text))
        tokens = round(reference.num_tokens * share)
        logprobs = reference.token_logprobs[:tokens] if reference.token_logprobs is not None else None
        t = Trajectory(steps=steps, num_tokens=tokens, finish_reason="stop", token_logprobs=logprobs,
                       finished=False, node_id=ctx.next_node_id(),
                       parent_id=previous.node_id if previous is not None else None)
        return ctx.keep(t)
