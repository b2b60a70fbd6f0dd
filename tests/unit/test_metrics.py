"""ttc.evaluation.metrics against values worked out by hand (see the comments next to each number)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ttc.evaluation.metrics import (
    PowerLawFit,
    Sample,
    accuracy,
    best_of_at_k,
    coverage_at_k,
    fit_power_law_coverage,
    majority_at_k,
    pass_at_k,
    selection_curve,
    usage_per_problem,
    weighted_at_k,
)


def tolerance(p: float, trials: int) -> float:
    """Four standard errors of a Monte-Carlo mean of `trials` Bernoulli(p) outcomes."""
    return 4 * math.sqrt(p * (1 - p) / trials)


# ------------------------------------------------------------------ accuracy


def test_accuracy():
    assert accuracy([True, False, True, True]) == 0.75  # 3 of 4
    assert accuracy(np.array([False, False])) == 0.0
    with pytest.raises(ValueError, match="empty"):
        accuracy([])


# ------------------------------------------------------------------ pass@k


def test_pass_at_k_by_hand():
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-12)
    # pass@1 is c/n: 1 - C(n-c,1)/C(n,1) = 1 - (n-c)/n
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3, abs=1e-12)
    # n=10, c=3, k=3: 1 - C(7,3)/C(10,3) = 1 - 35/120 = 85/120
    assert pass_at_k(10, 3, 3) == pytest.approx(85 / 120, abs=1e-12)
    # no correct sample: 0; n - c < k: every draw of k holds a correct one, exactly 1
    assert pass_at_k(8, 0, 4) == 0.0
    assert pass_at_k(5, 4, 2) == 1.0  # n - c = 1 < k = 2
    assert pass_at_k(5, 5, 5) == 1.0


def test_pass_at_k_matches_binomials_and_is_stable_for_large_n():
    for n, c, k in [(20, 7, 5), (64, 1, 64), (64, 1, 32), (100, 50, 10)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
    # n = 10_000 would overflow floats in the binomial form; the product form is fine.
    # 1 sample correct out of 10_000, k = 100: exactly k/n = 0.01.
    assert pass_at_k(10_000, 1, 100) == pytest.approx(0.01, abs=1e-12)


@pytest.mark.parametrize(
    "n, c, k, fragment",
    [(5, 2, 6, "k=6"), (5, 2, 0, "k=0"), (5, 6, 2, "c=6"), (5, -1, 2, "c=-1")],
)
def test_pass_at_k_rejects_bad_values_and_names_them(n, c, k, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        pass_at_k(n, c, k)
    assert f"n={n}" in str(info.value)


def test_coverage_at_k_over_two_problems():
    # problem 1: n=5, c=2, k=2 -> 0.7 (above); problem 2: n=4, c=0 -> 0. Mean 0.35.
    assert coverage_at_k([(5, 2), (4, 0)], 2) == pytest.approx(0.35, abs=1e-12)
    # problem 2 all correct instead -> (0.7 + 1) / 2 = 0.85
    assert coverage_at_k([(5, 2), (4, 4)], 2) == pytest.approx(0.85, abs=1e-12)
    with pytest.raises(ValueError):
        coverage_at_k([], 1)
    with pytest.raises(ValueError, match="k=5"):
        coverage_at_k([(5, 2), (4, 4)], 5)  # k > n of the second problem


# ------------------------------------------------------------------ majority / weighted / best-of


def S(answer, correct, score=None):
    return Sample(answer, correct, score)


def test_majority_at_1_is_fraction_of_correct_answered_samples():
    # 10 samples: 4 correct "7", 3 wrong "8", 1 wrong "9", 2 None -> majority@1 = 4/10
    samples = [S("7", True)] * 4 + [S("8", False)] * 3 + [S("9", False)] + [S(None, False)] * 2
    trials = 4000
    est = majority_at_k(samples, 1, rng=np.random.default_rng(1), trials=trials)
    assert est == pytest.approx(0.4, abs=tolerance(0.4, trials))


def test_majority_at_n_with_clear_majority_is_exact():
    # all 5 samples drawn every trial: "7" has 3 votes, "8" one, None none -> always "7"
    samples = [S("7", True)] * 3 + [S("8", False), S(None, False)]
    assert majority_at_k(samples, 5, rng=np.random.default_rng(0), trials=50) == 1.0
    wrong = [S("8", False)] * 3 + [S("7", True), S(None, False)]
    assert majority_at_k(wrong, 5, rng=np.random.default_rng(0), trials=50) == 0.0


def test_majority_at_2_with_ties_matches_enumeration():
    # samples a = "1" (correct), b = "2" (wrong), c = None. The 3 equally likely pairs:
    #   {a, b}: a tie 1-1, broken at random -> correct with prob 1/2
    #   {a, c}: None never wins -> "1" -> correct
    #   {b, c}: -> "2" -> wrong
    # exact majority@2 = (1/2 + 1 + 0) / 3 = 1/2
    samples = [S("1", True), S("2", False), S(None, False)]
    trials = 4000
    est = majority_at_k(samples, 2, rng=np.random.default_rng(2), trials=trials)
    assert est == pytest.approx(0.5, abs=tolerance(0.5, trials))
    # a = "1", a' = "1" (both correct), b = "2" (wrong): pairs {a,a'} -> 1, {a,b} -> 1/2,
    # {a',b} -> 1/2; exact = 2/3
    samples = [S("1", True), S("1", True), S("2", False)]
    est = majority_at_k(samples, 2, rng=np.random.default_rng(3), trials=trials)
    assert est == pytest.approx(2 / 3, abs=tolerance(2 / 3, trials))


def test_all_none_trials_count_incorrect():
    samples = [S(None, True), S(None, True)]  # a None answer never counts, whatever its flag
    assert majority_at_k(samples, 2, rng=0, trials=10) == 0.0
    assert weighted_at_k([S(None, True, 0.9)], 1, rng=0, trials=10) == 0.0
    assert best_of_at_k([S(None, True, 0.9)], 1, rng=0, trials=10) == 0.0


def test_equivalent_groups_answers_and_is_called_once_per_problem_not_per_trial():
    calls = []

    def same_number(a: str, b: str) -> bool:
        calls.append((a, b))
        return float(a) == float(b)

    # "2", "2.0" and "2.00" are one answer (3 votes, correct); "3" has 2 votes (wrong).
    samples = [S("2", True), S("2.0", True), S("2.00", True), S("3", False), S("3", False)]
    assert majority_at_k(samples, 5, rng=0, trials=300, equivalent=same_number) == 1.0
    assert len(calls) <= 4 * 2  # at most (distinct strings) x (clusters), independent of trials
    # by exact string equality "3" (2 votes) beats each single "2"-like string
    assert majority_at_k(samples, 5, rng=0, trials=300) == 0.0


def test_weighted_and_best_of_differ():
    # two correct "A" at 0.6 and one wrong "B" at 0.9, k = N = 3 (no sampling, no ties):
    #   weighted: A = 0.6 + 0.6 = 1.2 > B = 0.9 -> correct -> 1.0
    #   best_of:  max single score is B's 0.9 -> wrong -> 0.0
    #   majority: A has 2 votes to 1 -> 1.0
    samples = [S("A", True, 0.6), S("A", True, 0.6), S("B", False, 0.9)]
    assert weighted_at_k(samples, 3, rng=0, trials=20) == 1.0
    assert best_of_at_k(samples, 3, rng=0, trials=20) == 0.0
    # k = 2: pairs {A,A'} -> both correct; {A,B}, {A',B}: weighted 0.6 < 0.9 -> B, wrong.
    # so weighted@2 = best_of@2 = 1/3 here
    trials = 3000
    for f in (weighted_at_k, best_of_at_k):
        est = f(samples, 2, rng=np.random.default_rng(4), trials=trials)
        assert est == pytest.approx(1 / 3, abs=tolerance(1 / 3, trials))


def test_best_of_ties_are_random_and_none_is_never_picked():
    # equal scores 0.5, one correct one wrong, plus a None at the top score: best_of@3 = 1/2
    samples = [S("1", True, 0.5), S("2", False, 0.5), S(None, False, 1.0)]
    trials = 4000
    est = best_of_at_k(samples, 3, rng=np.random.default_rng(5), trials=trials)
    assert est == pytest.approx(0.5, abs=tolerance(0.5, trials))


def test_weighted_needs_scores():
    with pytest.raises(ValueError, match="sample 1"):
        weighted_at_k([S("1", True, 0.5), S("2", False)], 1, rng=0)
    with pytest.raises(ValueError, match="score"):
        best_of_at_k([S("1", True)], 1, rng=0)


def test_per_problem_k_errors_name_k_and_n():
    samples = [S("1", True)] * 3
    with pytest.raises(ValueError, match=r"k=4.*N=3"):
        majority_at_k(samples, 4, rng=0)
    with pytest.raises(ValueError, match=r"k=0"):
        majority_at_k(samples, 0, rng=0)


def test_same_seed_same_estimate():
    samples = [S("1", True, 0.3), S("2", False, 0.8), S("1", True, 0.4), S(None, False), S("3", False, 0.1)]
    for f in (majority_at_k, weighted_at_k, best_of_at_k):
        a = f(samples, 2, rng=np.random.default_rng(9), trials=100)
        b = f(samples, 2, rng=np.random.default_rng(9), trials=100)
        assert a == b


# ------------------------------------------------------------------ selection_curve


def problems_with_correct_counts(counts, n):
    """One problem per count: `count` correct "right" samples then wrong "wrong" ones."""
    return [[S("right", True, 0.5)] * c + [S("wrong", False, 0.5)] * (n - c) for c in counts]


def test_coverage_curve_is_exact_pass_at_k():
    problems = problems_with_correct_counts([2, 0], 5)
    curve = selection_curve(problems, [1, 2, 5], "coverage", bootstrap=50)
    # k=1: (2/5 + 0)/2 = 0.2; k=2: (0.7 + 0)/2 = 0.35; k=5: (1 + 0)/2 = 0.5
    assert [row["k"] for row in curve] == [1, 2, 5]
    assert [row["value"] for row in curve] == pytest.approx([0.2, 0.35, 0.5], abs=1e-12)


def test_curve_methods_agree_with_per_problem_functions():
    problems = problems_with_correct_counts([5, 3, 1, 0], 6)
    # majority@6 is exact here: 5 vs 1 -> right; 3 vs 3 -> tie (1/2); 1 vs 5 -> wrong; 0 -> wrong
    # mean = (1 + 1/2 + 0 + 0) / 4 = 0.375, up to the Monte-Carlo error of the tied problem
    trials = 400
    (row,) = selection_curve(problems, [6], "majority", trials=trials, bootstrap=20)
    assert row["value"] == pytest.approx(0.375, abs=tolerance(0.5, trials) / 4)
    # every score is equal, so weighted = majority exactly in distribution
    (row,) = selection_curve(problems, [6], "weighted", trials=trials, bootstrap=20)
    assert row["value"] == pytest.approx(0.375, abs=tolerance(0.5, trials) / 4)


def test_curve_is_deterministic_and_independent_of_ks_order():
    problems = [
        [S("1", True, 0.9), S("2", False, 0.2), S("1", True, 0.4), S(None, False), S("2", False, 0.7)],
        [S("5", False, 0.9), S("4", True, 0.3), S("4", True, 0.6), S("6", False, 0.1), S("4", True, 0.2)],
    ]
    for method in ("majority", "weighted", "best_of", "coverage"):
        first = selection_curve(problems, [1, 3, 5], method, seed=7, trials=50, bootstrap=30)
        again = selection_curve(problems, [1, 3, 5], method, seed=7, trials=50, bootstrap=30)
        assert first == again
        reordered = selection_curve(problems, [5, 1], method, seed=7, trials=50, bootstrap=30)
        assert [r["value"] for r in reordered] == [first[2]["value"], first[0]["value"]]


def test_bootstrap_interval_contains_value_and_shrinks_with_more_problems():
    # problems are all-correct or all-wrong, alternately: coverage@1 is 0 or 1 per problem, mean 1/2
    def width(num):
        problems = problems_with_correct_counts([4 if i % 2 else 0 for i in range(num)], 4)
        (row,) = selection_curve(problems, [1], "coverage", seed=3, bootstrap=400)
        assert row["value"] == pytest.approx(0.5)
        assert row["low"] <= row["value"] <= row["high"]
        return row["high"] - row["low"]

    small, large = width(10), width(1000)
    # standard error of a mean of 0/1 values at p = 1/2: 0.5/sqrt(num); 95% width ~ 3.92 se
    assert small == pytest.approx(3.92 * 0.5 / math.sqrt(10), rel=0.35)
    assert large == pytest.approx(3.92 * 0.5 / math.sqrt(1000), rel=0.35)
    assert large < small / 5


def test_no_bootstrap_gives_nan_interval():
    (row,) = selection_curve(problems_with_correct_counts([1], 2), [1], "coverage", bootstrap=0)
    assert row["value"] == 0.5 and math.isnan(row["low"]) and math.isnan(row["high"])


def test_curve_errors():
    problems = problems_with_correct_counts([1, 2], 8) + problems_with_correct_counts([1], 6)
    with pytest.raises(ValueError, match=r"'vote'.*majority.*weighted.*best_of.*coverage"):
        selection_curve(problems, [1], "vote")
    with pytest.raises(ValueError, match=r"k=7.*N=6"):
        selection_curve(problems, [1, 7], "majority")
    with pytest.raises(ValueError, match=r"k=0"):
        selection_curve(problems, [0], "coverage")
    with pytest.raises(ValueError, match="problem 1.*score"):
        selection_curve([[S("1", True, 0.5)], [S("1", True)]], [1], "best_of")


# ------------------------------------------------------------------ power law


def test_power_law_fit_recovers_exact_parameters():
    a, b = -2.3, -0.45
    ks = [1, 2, 4, 8, 16, 32, 64, 128]
    coverage = [math.exp(a * k**b) for k in ks]
    fit = fit_power_law_coverage(ks, coverage)
    assert isinstance(fit, PowerLawFit)
    assert fit.a == pytest.approx(a, abs=1e-6)
    assert fit.b == pytest.approx(b, abs=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.n_points == len(ks)
    assert fit.predict(256) == pytest.approx(math.exp(a * 256**b), abs=1e-9)
    assert fit.predict(np.array([1, 64])) == pytest.approx([coverage[0], coverage[6]], abs=1e-9)


def test_power_law_fit_skips_unusable_points_and_needs_two():
    a, b = -1.0, -0.5
    # c = 0 and c = 1 have an infinite double log and are dropped; two good points remain
    fit = fit_power_law_coverage([1, 4, 9, 16], [0.0, math.exp(a * 4**b), math.exp(a * 9**b), 1.0])
    assert (fit.a, fit.b, fit.n_points) == (pytest.approx(a, abs=1e-9), pytest.approx(b, abs=1e-9), 2)
    with pytest.raises(ValueError, match="at least 2"):
        fit_power_law_coverage([1, 2, 3], [0.0, 0.5, 1.0])


# ------------------------------------------------------------------ usage


def test_usage_per_problem():
    usages = [
        {"generated_tokens": 100, "prompt_tokens": 20, "verifier_tokens": 0, "flops": 1e9},
        {"generated_tokens": 300, "prompt_tokens": 40, "flops": 3e9},  # no verifier_tokens: 0
    ]
    out = usage_per_problem(usages)
    assert out["problems"] == 2
    assert out["total_generated_tokens"] == 400 and out["mean_generated_tokens"] == 200
    assert out["total_prompt_tokens"] == 60 and out["mean_prompt_tokens"] == 30
    assert out["total_verifier_tokens"] == 0 and out["mean_verifier_tokens"] == 0
    assert out["total_flops"] == pytest.approx(4e9) and out["mean_flops"] == pytest.approx(2e9)
    with pytest.raises(ValueError):
        usage_per_problem([])
