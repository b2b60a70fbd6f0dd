"""Choosing one answer among candidates: majority, best score, weighted majority.

Shared by every strategy that ends with a vote, so tie-breaking is the same
everywhere: ties go to the answer seen first (a stable, seed-independent rule).
"""
from __future__ import annotations

from typing import Sequence

from ttc.types import Trajectory
from verifiers.answers import group_answers


def majority_vote(candidates: Sequence[Trajectory], weights: Sequence[float] | None = None
                  ) -> tuple[str | None, Trajectory | None, dict[str, float]]:
    """(answer, a trajectory that gave it, total weight per answer).

    Equivalent answers ("1/2", "0.5") vote together. With `weights`, each
    candidate votes with its weight (weighted majority); the representative
    trajectory of the winning answer is its highest-weighted one.
    """
    weights = list(weights) if weights is not None else [1.0] * len(candidates)
    clusters = group_answers([c.answer for c in candidates])
    if not clusters:
        return None, (candidates[0] if candidates else None), {}
    totals = [sum(weights[i] for i in cluster) for cluster in clusters]
    winner = max(range(len(clusters)), key=lambda k: (totals[k], -k))
    members = clusters[winner]
    best = candidates[max(members, key=lambda i: (weights[i], -i))]
    votes = {candidates[cluster[0]].answer: round(total, 6) for cluster, total in zip(clusters, totals)}
    return best.answer, best, votes


def best_scored(candidates: Sequence[Trajectory], scores: Sequence[float]) -> tuple[str | None, Trajectory | None]:
    """The candidate with the highest score (first on ties)."""
    if not candidates:
        return None, None
    i = max(range(len(candidates)), key=lambda k: (scores[k], -k))
    return candidates[i].answer, candidates[i]
