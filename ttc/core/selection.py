"""Choosing one answer among candidates: the one rule for majority, weighted majority and best-by-verifier.

Every strategy, calibration and the metrics use this module, so a vote means the
same everywhere:

- majority: each answered candidate votes once for its answer; equivalent answers
  ("1/2", "0.5") vote together; a candidate without an answer never votes;
- weighted: as majority, each vote weighing the candidate's score, clamped at 0
  (a negative, NaN or missing score adds nothing, and never subtracts);
- verifier: the highest-scored candidate that has an answer (the highest-scored
  of all when none has one);
- combined: votes and verifier together, per answer log(votes) + g x logit(mean score
  of its candidates), scores taken as probabilities (clipped to [1e-4, 1 - 1e-4]) and g
  (`verifier_weight`) fitted on calibration data: a verifier that separates right from
  wrong can overturn a narrow majority, not a wide one. g = 0 is majority voting.

Ties go to the answer (or candidate) seen first, a stable, seed-free rule; totals
within a relative 1e-9 are tied, since sums of the same scores in another order
differ in the last bits. Over randomly ordered draws (the metrics' subsets) the
first-seen rule picks each of equally voted answers with equal probability. The
chosen candidate of a vote is the answer's highest-weighted one (its first on
ties). `pick_many` is the vectorised rule; `select` applies it to trajectories.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import numpy as np

from ttc.core.aggregation import Aggregation, aggregate
from ttc.core.answers import answers_match, group_answers
from ttc.core.errors import ConfigError
from ttc.core.types import Trajectory

if TYPE_CHECKING:
    from ttc.core.context import SearchContext

Rule = Literal["majority", "weighted", "verifier", "combined"]
RULES: tuple[str, ...] = ("majority", "weighted", "verifier", "combined")
#: Scores are clipped this far inside (0, 1) before their logit is taken (the combined rule).
LOGIT_CLIP = 1e-4

#: Relative distance within which two vote totals (or scores) count as tied.
TIE_RTOL = 1e-9


def vote_weight(score: float | None) -> float:
    """A candidate's weight in a weighted vote: its score, clamped at 0 (None or NaN weighs 0)."""
    if score is None or math.isnan(score):
        return 0.0
    return max(float(score), 0.0)


def cluster_labels(answers: Sequence[str | None],
                   equivalent: Callable[[str, str], bool] | None = answers_match) -> list[int]:
    """Equivalence class of each answer, numbered in order of first appearance; -1 for no answer."""
    labels = [-1] * len(answers)
    for k, members in enumerate(group_answers(answers, equivalent)):
        for i in members:
            labels[i] = k
    return labels


def pick_many(labels: np.ndarray, scores: np.ndarray | None, rule: str, verifier_weight: float = 1.0
              ) -> np.ndarray:
    """The chosen column of each row: `labels` (T, k) answer classes (-1 = no answer) of k candidates
    in the order drawn, `scores` (T, k) their scores (needed by weighted, verifier and combined). -1
    for an empty row."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a (trials, k) array, got shape {labels.shape}")
    trials, k = labels.shape
    if k == 0:
        return np.full(trials, -1, dtype=np.int64)
    if rule not in RULES:
        raise ConfigError(f"selection must be one of {list(RULES)}, got {rule!r}")
    answered = labels >= 0
    if rule == "majority":
        weights = np.ones(labels.shape)
    else:
        if scores is None:
            raise ValueError(f"selection {rule!r} needs scores")
        raw = np.asarray(scores, dtype=np.float64)
        weights = np.where(np.isnan(raw), -np.inf, raw)
    if rule == "verifier":
        eligible = np.where(answered.any(axis=1, keepdims=True), answered, True)
        return _first_max(weights, eligible)
    if rule == "combined":
        # Per answer: log(votes) + g x logit(mean score); a NaN score counts as the lowest probability.
        probs = np.clip(np.where(np.isfinite(weights), weights, 0.0), LOGIT_CLIP, 1 - LOGIT_CLIP)
        weights = np.where(answered, probs, 0.0)
    else:
        weights = np.where(answered, np.maximum(weights, 0.0), 0.0)
    width = int(labels.max()) + 1 if answered.any() else 1
    rows = np.arange(trials)[:, None]
    flat = (rows * width + np.where(answered, labels, 0))[answered]
    totals = np.bincount(flat, weights=weights[answered], minlength=trials * width).reshape(trials, width)
    counts = np.bincount(flat, minlength=trials * width).reshape(trials, width)
    present = counts > 0
    if rule == "combined":
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = totals / np.maximum(counts, 1)
            totals = np.where(present, np.log(np.maximum(counts, 1)) + verifier_weight * np.log(mean / (1 - mean)),
                              -np.inf)
    first = np.full(trials * width, k, dtype=np.int64)
    np.minimum.at(first, flat, np.broadcast_to(np.arange(k), labels.shape)[answered])
    first = first.reshape(trials, width)
    tied = _tied_max(totals, present)
    winner = np.where(tied, first, k).argmin(axis=1)  # the tied answer seen first
    members = labels == winner[:, None]
    chosen = _first_max(weights, members)
    return np.where(answered.any(axis=1), chosen, 0)  # nobody answered: the first candidate stands


def _tied_max(values: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    masked = np.where(eligible, values, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    tol = TIE_RTOL * np.maximum(1.0, np.abs(np.where(np.isfinite(best), best, 0.0)))
    return eligible & (masked >= best - tol)


def _first_max(values: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Per row, the first eligible column whose value ties the row's largest."""
    return _tied_max(values, eligible).argmax(axis=1)


def pick(labels: Sequence[int], scores: Sequence[float] | None, rule: str, verifier_weight: float = 1.0
         ) -> int | None:
    """`pick_many` for one row: the chosen index, None when there are no candidates."""
    if not labels:
        return None
    row = None if scores is None else np.asarray([scores], dtype=np.float64)
    return int(pick_many(np.asarray([labels]), row, rule, verifier_weight)[0])


@dataclass
class Choice:
    """The chosen answer and candidate, the vote per answer (majority and weighted), and the rule applied."""

    answer: str | None
    best: Trajectory | None
    selection: str
    votes: dict[str, float] | None = field(default=None)


def select(candidates: Sequence[Trajectory], rule: str, scores: Sequence[float] | None = None,
           verifier_weight: float = 1.0) -> Choice:
    """Apply `rule` to trajectories (CPU work: answer equivalence; run it off the event loop)."""
    labels = cluster_labels([t.answer for t in candidates])
    i = pick(labels, None if rule == "majority" else scores, rule, verifier_weight)
    best = candidates[i] if i is not None else None
    votes = None
    if rule not in ("verifier", "combined"):
        weights = [1.0 if rule == "majority" else vote_weight(s) for s in (scores or [1.0] * len(candidates))]
        totals: dict[int, float] = {}
        for label, w in zip(labels, weights):
            if label >= 0:
                totals[label] = totals.get(label, 0.0) + w
        answer_of = {label: candidates[labels.index(label)].answer for label in totals}
        votes = {answer_of[label]: round(total, 6) for label, total in totals.items()}
    return Choice(best.answer if best is not None else None, best, rule, votes)


async def choose(ctx: "SearchContext", candidates: Sequence[Trajectory], rule: str,
                 aggregation: Aggregation = "last", *, rescore: bool = True, verifier_weight: float = 1.0) -> Choice:
    """The final choice of a strategy. Majority needs no scores. Otherwise the candidates are scored
    in one call (`rescore`) or their step scores from the search are used; when the verifier budget
    is spent, the vote falls back to majority rather than lose the candidates."""
    scores = None
    if rule != "majority" and candidates:
        step_scores = (await ctx.score(candidates, final_only=aggregation == "last") if rescore
                       else [t.step_scores for t in candidates])
        if step_scores is None:
            ctx.record("selection_fallback", reason="verifier budget exhausted", selection="majority")
            choice = await ctx.offload(select, candidates, "majority")
            choice.selection = "majority (verifier budget exhausted)"
            return choice
        scores = [aggregate(s, aggregation) for s in step_scores]
        if rescore:
            ctx.record("scored", scores=[round(s, 6) for s in scores])
    return await ctx.offload(select, candidates, rule if candidates else "majority", scores, verifier_weight)
