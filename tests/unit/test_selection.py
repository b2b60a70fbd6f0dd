"""The one selection rule (ttc.core.selection) and its users: strategies and metrics agree with it."""
from __future__ import annotations

import random

import numpy as np
import pytest

from ttc.core.selection import pick, pick_many, select, vote_weight
from ttc.core.types import Trajectory
from ttc.evaluation import metrics as M


def traj(answer):
    return Trajectory(["x"], 1, "stop", answer=answer)


@pytest.mark.parametrize("rule", ["majority", "weighted", "verifier"])
def test_the_vectorised_rule_is_the_rule(rule):
    """pick_many over many rows = pick on each row (random labels with gaps, ties and negatives)."""
    rng = random.Random(rule)
    for _ in range(300):
        k = rng.randint(1, 7)
        labels = [rng.choice([-1, 0, 1, 2]) for _ in range(k)]
        scores = [rng.choice([-0.5, 0.0, 0.25, 0.5, 0.5, float("nan")]) for _ in range(k)]
        row = pick(labels, scores, rule)
        assert pick_many(np.array([labels]), np.array([scores]), rule)[0] == row


def test_negative_and_missing_scores_never_subtract_from_a_vote():
    assert [vote_weight(s) for s in (-3.0, float("nan"), None, 0.4)] == [0.0, 0.0, 0.0, 0.4]
    # "9" has one sample at 0.3; "7" two at 0.4 and -1.0: unclamped "7" would total -0.6 and lose.
    cands = [traj("7"), traj("9"), traj("7")]
    assert select(cands, "weighted", [0.4, 0.3, -1.0]).answer == "7"


def test_verifier_prefers_an_answered_candidate_and_ties_go_first():
    cands = [traj(None), traj("3"), traj("4")]
    assert select(cands, "verifier", [0.9, 0.5, 0.5]).best is cands[1]
    assert select([traj(None), traj(None)], "verifier", [0.1, 0.2]).best is not None  # nobody answered: best score


def test_metrics_vote_with_the_same_rule_as_the_strategies():
    """A tie the strategies settle by first-seen order is, over random draws, split evenly by metrics."""
    samples = [M.Sample("1", True, 0.5), M.Sample("2", False, 0.5)]
    for method in (M.majority_at_k, M.weighted_at_k, M.best_of_at_k):
        assert abs(method(samples, 2, rng=0, trials=4000) - 0.5) < 0.05
    # Clamped weights: one correct sample scored 0.2 beats two wrong ones scored -1 each.
    samples = [M.Sample("1", True, 0.2), M.Sample("2", False, -1.0), M.Sample("2", False, -1.0)]
    assert M.weighted_at_k(samples, 3, rng=0, trials=50) == 1.0
