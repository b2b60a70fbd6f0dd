"""Turning per-step scores into one score per trajectory.

One module for the search and the final selection alike, so "min" means the
same in beam search as in best-of-N.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

Aggregation = Literal["last", "min", "prod", "mean"]
AGGREGATIONS: tuple[str, ...] = ("last", "min", "prod", "mean")


def aggregate(step_scores: Sequence[float], how: Aggregation = "last") -> float:
    """One score from per-step scores; an unscored trajectory gets -inf so it never wins."""
    if not step_scores:
        return -math.inf
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
