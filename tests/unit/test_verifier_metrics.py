"""Verifier metrics on hand-made cases, and the combined vote-and-verifier rule."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ttc.core.selection import pick, select
from ttc.core.types import Trajectory
from ttc.evaluation.verifier_metrics import (
    auroc, fit_verifier_weight, outvoted_recovered, paired_bootstrap, selection_accuracy, subsample,
    within_problem_auroc,
)


def test_auroc_by_hand_with_ties_and_one_class():
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auroc([0.1, 0.9], [True, False]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [True, False, False]) == 0.5  # ties count one half
    # pairs (pos, neg): (0.8, 0.3) win, (0.8, 0.8) tie, (0.2, 0.3) loss, (0.2, 0.8) loss -> 1.5 / 4
    assert auroc([0.8, 0.2, 0.3, 0.8], [True, True, False, False]) == pytest.approx(0.375)
    assert auroc([0.1, 0.2], [True, True]) is None and auroc([], []) is None
    assert auroc([float("nan"), 0.5], [True, False]) == 0.0  # a missing score ranks lowest


def test_within_problem_auroc_pairs_only_inside_a_problem():
    items = [
        ("a", True, 0.9), ("a", False, 0.95), ("a", False, 0.1),  # pairs: lose, win
        ("b", True, 0.2), ("b", False, 0.2),  # a tie: one half
        ("c", True, 0.99), ("c", True, 0.98),  # one class only: no pair
        ("d", False, 0.0),
    ]
    assert within_problem_auroc(items) == pytest.approx((0 + 1 + 0.5) / 3)
    # A scorer that only ranks problems (all of a's above all of b's) is worth nothing inside them.
    easy_hard = [("a", True, 0.9), ("a", False, 0.9), ("b", True, 0.1), ("b", False, 0.1)]
    assert auroc([s for *_, s in easy_hard], [c for _, c, _ in easy_hard]) == 0.5
    assert within_problem_auroc(easy_hard) == 0.5
    assert within_problem_auroc([("a", True, 1.0)]) is None


def test_combined_rule_lets_a_confident_verifier_overturn_a_narrow_majority_only():
    labels = [0, 0, 0, 1, 1]  # answer 0 has 3 votes, answer 1 has 2
    scores = [0.2, 0.2, 0.2, 0.95, 0.95]
    assert pick(labels, scores, "combined", 0.0) == 0  # g = 0: majority
    assert pick(labels, scores, "combined", 1.0) == 3  # log 2 + logit .95 > log 3 + logit .2
    wide = [0] * 14 + [1, 1]
    assert pick(wide, [0.4] * 14 + [0.6, 0.6], "combined", 1.0) == 0  # a mild verifier cannot beat 14 votes
    ts = [Trajectory(["x"], 1, "stop", answer=a) for a in ["7", "7", "7", "8", "8"]]
    choice = select(ts, "combined", scores, verifier_weight=1.0)
    assert choice.answer == "8" and choice.votes is None
    # NaN scores count as the lowest probability; unanswered candidates never vote
    assert pick([0, 1, -1], [float("nan"), 0.5, 1.0], "combined", 1.0) == 1


def test_selection_accuracy_fit_and_recovery():
    problems = [
        {"answers": ["1", "1", "2"], "correct": [False, False, True], "scores": [0.1, 0.1, 0.99]},
        {"answers": ["3", "3", "4"], "correct": [True, True, False], "scores": [0.9, 0.9, 0.2]},
        {"answers": ["5", "6", "6"], "correct": [False, False, False], "scores": [0.5, 0.5, 0.5]},
    ]
    acc = selection_accuracy(problems, {"m": ("majority", 0.0), "c": ("combined", 1.0), "v": ("verifier", 0.0)})
    assert acc == {"m": [False, True, False], "c": [True, True, False], "v": [True, True, False]}
    g, best = fit_verifier_weight(problems)
    assert best == pytest.approx(2 / 3) and 0 < g <= 1.0  # the smallest weight that reaches the best accuracy
    rec = outvoted_recovered(problems, acc["c"], acc["m"])
    assert rec == {"outvoted": 1, "recovered": 1, "share": 1.0, "wins": 1, "losses": 0}


def test_paired_bootstrap_and_subsample():
    gain, lo, hi = paired_bootstrap([True] * 60 + [False] * 40, [True] * 50 + [False] * 50)
    assert gain == pytest.approx(10.0) and lo <= gain <= hi and lo > 0
    gain, lo, hi = paired_bootstrap([True, False], [True, False])
    assert (gain, lo, hi) == (0.0, 0.0, 0.0)
    assert all(math.isnan(x) for x in paired_bootstrap([], []))
    p = {"id": "a", "answers": list("abcdef"), "correct": [True] * 6, "scores": list(range(6))}
    (s,) = subsample([p], 3, seed=1)
    assert len(s["answers"]) == 3 and s["id"] == "a" and [p["answers"][i] for i in s["scores"]] == s["answers"]
    assert np.array_equal(subsample([p], 3, seed=1)[0]["scores"], s["scores"])  # seeded
