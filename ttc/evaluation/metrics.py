"""Evaluation metrics for test-time compute, all in one place, as pure functions.

Inputs are plain Python values (lists of bools, ``(n, c)`` pairs, lists of :class:`Sample`),
never ttc objects, so every number here can be checked by hand.

The central idea: one *large-N run* per problem (say N = 64 samples, each with an extracted
answer, a correctness flag and optionally a verifier score) is enough to draw the whole
accuracy-vs-k curve for every selection method, for every k <= N:

* ``coverage`` (pass@k): the chance that at least one of k samples is correct, computed exactly
  with the unbiased estimator of Chen et al. (2021);
* ``majority``: self-consistency / majority vote over k samples (Wang et al., 2023);
* ``weighted``: majority vote where each sample votes with its verifier score
  (Li et al., 2023; Snell et al., 2024 call it "best-of-N weighted");
* ``best_of``: the single sample with the highest verifier score (Cobbe et al., 2021).

For the three selection methods there is no closed form, so the value at k is estimated by
drawing k of the N samples *without replacement*, many times, and averaging; error bars over
problems come from a bootstrap (Efron & Tibshirani, 1993).

References
----------
* M. Chen et al. (2021), "Evaluating Large Language Models Trained on Code", arXiv:2107.03374.
* B. Brown et al. (2024), "Large Language Monkeys: Scaling Inference Compute with Repeated
  Sampling", arXiv:2407.21787.
* X. Wang et al. (2023), "Self-Consistency Improves Chain of Thought Reasoning in Language
  Models", ICLR 2023, arXiv:2203.11171.
* K. Cobbe et al. (2021), "Training Verifiers to Solve Math Word Problems", arXiv:2110.14168.
* Y. Li et al. (2023), "Making Language Models Better Reasoners with Step-Aware Verifier",
  ACL 2023, arXiv:2206.02336.
* C. Snell et al. (2024), "Scaling LLM Test-Time Compute Optimally can be More Effective than
  Scaling Model Parameters", arXiv:2408.03314.
* B. Efron and R. Tibshirani (1993), "An Introduction to the Bootstrap", Chapman & Hall.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ttc.core.selection import cluster_labels, pick_many

__all__ = [
    "METHODS",
    "PowerLawFit",
    "Sample",
    "accuracy",
    "accuracy_interval",
    "best_of_at_k",
    "coverage_at_k",
    "fit_power_law_coverage",
    "majority_at_k",
    "pass_at_k",
    "selection_curve",
    "usage_per_problem",
    "weighted_at_k",
]

METHODS: tuple[str, ...] = ("majority", "weighted", "best_of", "coverage")
USAGE_KEYS: tuple[str, ...] = ("generated_tokens", "prompt_tokens", "verifier_tokens", "flops")

Equivalent = Callable[[str, str], bool]

@dataclass(frozen=True)
class Sample:
    """One sample of a large-N run: its extracted answer, whether it is correct, its score.

    ``answer`` is None when no answer could be extracted; such a sample never wins a vote.
    ``score`` is a verifier score, expected in [0, 1]; only ``weighted`` and ``best_of`` need it.
    Any object with these three attributes (``score`` optional) is accepted where a Sample is.
    """

    answer: str | None
    correct: bool
    score: float | None = None


# ------------------------------------------------------------------ closed-form metrics


def accuracy(correct: Sequence[bool]) -> float:
    """Fraction of True values: the plain accuracy of one answer per problem.

    Raises ValueError on an empty sequence (the accuracy of nothing is undefined, and a silent
    0 or NaN would hide an empty evaluation).
    """
    flags = np.asarray(correct, dtype=bool).ravel()
    if flags.size == 0:
        raise ValueError("accuracy() of an empty sequence is undefined")
    return float(flags.mean())


def accuracy_interval(correct: Sequence[bool], *, level: float = 0.9, rounds: int = 1000, seed: int = 0
                      ) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy, resampling problems (seeded: the same data gives
    the same band). Raises ValueError on an empty sequence, as `accuracy` does."""
    flags = np.asarray(correct, dtype=float).ravel()
    if flags.size == 0:
        raise ValueError("accuracy_interval() of an empty sequence is undefined")
    rng = np.random.default_rng(seed)
    means = flags[rng.integers(0, flags.size, size=(rounds, flags.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c are correct (Chen et al., 2021).

    pass@k = 1 - C(n - c, k) / C(n, k): the probability that k samples drawn without
    replacement from the n contain at least one correct one. Taking the best of k fresh samples
    and averaging is biased for k > 1 when n is small; this estimator is not.

    Computed in the numerically stable product form of the Codex paper,
    1 - prod_{i = n-c+1}^{n} (1 - k / i), which never forms the huge binomial coefficients.
    Returns exactly 1.0 when n - c < k (every draw of k contains a correct sample).

    Raises ValueError when k < 1, k > n, c < 0 or c > n.
    """
    n, c, k = operator.index(n), operator.index(c), operator.index(k)
    if k < 1 or k > n or c < 0 or c > n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n and 0 <= c <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def coverage_at_k(per_problem: Sequence[tuple[int, int]], k: int) -> float:
    """Coverage at k: mean pass@k over problems, from one ``(n, c)`` pair per problem.

    Brown et al. (2024, "Large Language Monkeys") call this coverage: the fraction of problems
    that at least one of k samples solves, i.e. what a perfect verifier could reach.
    Raises ValueError on no problems, or (via pass_at_k) when k does not fit some problem's n.
    """
    if len(per_problem) == 0:
        raise ValueError("coverage_at_k() needs at least one problem")
    return float(np.mean([pass_at_k(n, c, k) for n, c in per_problem]))


# ------------------------------------------------------------- Monte-Carlo selection metrics


@dataclass(frozen=True)
class _Prepared:
    """One problem's samples, clustered once so each Monte-Carlo trial is only array work."""

    labels: np.ndarray  # (N,) cluster id of each sample, -1 where the answer is None
    cluster_correct: np.ndarray  # (C,) correctness of each cluster (that of its first sample)
    sample_correct: np.ndarray  # (N,) correctness of each sample
    scores: np.ndarray  # (N,) verifier scores, NaN where missing
    num_correct: int  # samples flagged correct, for pass@k

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_clusters(self) -> int:
        return int(self.cluster_correct.shape[0])


def _prepare(samples: Sequence[Sample], equivalent: Equivalent | None = None) -> _Prepared:
    answers = [s.answer for s in samples]
    for i, a in enumerate(answers):
        if a is not None and not isinstance(a, str):
            raise TypeError(f"sample {i}: answer must be a str or None, got {type(a).__name__}")
    labels = np.array(cluster_labels(answers, equivalent), dtype=np.int64)  # the strategies' grouping
    sample_correct = np.array([bool(s.correct) for s in samples], dtype=bool)
    raw_scores = [getattr(s, "score", None) for s in samples]
    scores = np.array([math.nan if x is None else float(x) for x in raw_scores], dtype=np.float64)
    num_clusters = int(labels.max()) + 1 if labels.size else 0
    cluster_correct = np.zeros(num_clusters, dtype=bool)
    if num_clusters:
        # The first sample of each cluster speaks for it: first index of each label.
        answered = np.flatnonzero(labels >= 0)
        _, first = np.unique(labels[answered], return_index=True)
        cluster_correct = sample_correct[answered[first]]
    return _Prepared(labels, cluster_correct, sample_correct, scores, int(sample_correct.sum()))


def _check_k(k: int, n: int) -> int:
    k = operator.index(k)
    if k < 1 or k > n:
        raise ValueError(f"k must satisfy 1 <= k <= N; got k={k} with N={n} samples")
    return k


def _check_trials(trials: int) -> int:
    trials = operator.index(trials)
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    return trials


def _require_scores(p: _Prepared, method: str) -> None:
    bad = np.flatnonzero((p.labels >= 0) & ~np.isfinite(p.scores))
    if bad.size:
        raise ValueError(
            f"{method} needs a finite score on every sample with an answer; "
            f"sample {int(bad[0])} has score {p.scores[bad[0]]!r}"
        )


def _draw(rng: np.random.Generator, n: int, k: int, trials: int) -> np.ndarray:
    """(trials, k) sample indices: each row is k of range(n) drawn without replacement."""
    return rng.permuted(np.tile(np.arange(n), (trials, 1)), axis=1)[:, :k]


def _select(p: _Prepared, k: int, rng: np.random.Generator, trials: int, rule: str) -> float:
    """Share of `trials` random k-subsets on which `rule` (ttc.core.selection, the rule every strategy
    uses) picks a correct answer."""
    if p.num_clusters == 0:  # every answer is None: no trial can be correct
        return 0.0
    idx = _draw(rng, p.n, k, trials)
    labels = p.labels[idx]  # (T, k), in the order drawn: ties go to the answer drawn first
    chosen = pick_many(labels, None if rule == "majority" else p.scores[idx], rule)
    rows = np.arange(trials)
    if rule == "verifier":  # the chosen sample's own flag counts
        correct = p.sample_correct[idx[rows, chosen]]
    else:  # a vote's answer is correct when its cluster is
        correct = p.cluster_correct[labels[rows, chosen]]
    return float((correct & (labels >= 0).any(axis=1)).mean())


def _estimator(rule: str, name: str, doc: str) -> Callable[..., float]:
    """One public estimator per rule, all with one signature and one body (see `_select`)."""

    def estimate(samples: Sequence[Sample], k: int, *, rng: np.random.Generator | int | None, trials: int = 200,
                 equivalent: Equivalent | None = None) -> float:
        # best-of pools no votes: skip the equivalence calls
        p = _prepare(samples, None if rule == "verifier" else equivalent)
        k, trials = _check_k(k, p.n), _check_trials(trials)
        if rule != "majority":
            _require_scores(p, name)
        return _select(p, k, np.random.default_rng(rng), trials, rule)

    estimate.__name__ = estimate.__qualname__ = name
    estimate.__doc__ = doc
    return estimate


majority_at_k = _estimator("majority", "majority_at_k", """Probability that majority vote over k of the N samples picks a correct answer.

    Majority vote is self-consistency (Wang et al., 2023): the most frequent answer wins.
    Estimated for one problem by Monte-Carlo: ``trials`` times, draw k of the N samples without
    replacement with ``rng`` and take the vote; return the fraction of correct votes (standard
    error at most 0.5 / sqrt(trials)). Subsampling one large-N run this way gives every k <= N
    from a single run.

    Answers are grouped by exact string equality, or by ``equivalent(a, b)`` when given (in
    ttc, ``ttc.core.answers.answers_match``); clusters are computed once, not per trial.
    A cluster is correct when its first sample is. The vote is ``ttc.core.selection``'s, the one
    every strategy uses: ties go to the answer drawn first, and since the draws are in random
    order, each of the tied answers wins equally often (neither favouring nor penalising ties).
    Samples whose answer is None never win; a trial whose k samples are all None is incorrect.

    Raises ValueError unless 1 <= k <= N and trials >= 1.
    """)

weighted_at_k = _estimator("weighted", "weighted_at_k", """Probability that score-weighted majority vote over k of the N samples is correct.

    Each answer's vote is the sum of its samples' verifier scores (clamped at 0, as in every
    strategy's weighted vote), and the largest total wins
    (Li et al., 2023; "best-of-N weighted" in Snell et al., 2024). It sits between majority
    vote (all scores equal) and best-of (one sample decides). Everything else (Monte-Carlo over
    ``trials`` draws without replacement, answer grouping, ties to the answer drawn first, None answers)
    is as in :func:`majority_at_k`; totals within a relative 1e-9 of each other count as tied.

    Raises ValueError unless 1 <= k <= N and trials >= 1, or if a sample with an answer has no
    finite score.
    """)

best_of_at_k = _estimator("verifier", "best_of_at_k", """Probability that picking the highest-scored of k of the N samples gives a correct one.

    Best-of-N with a verifier (Cobbe et al., 2021): the single sample with the largest score
    is the answer, and its own ``correct`` flag counts. Samples whose answer is None are never
    picked (they have nothing to submit); a trial whose k samples are all None is incorrect.
    Equal top scores go to the sample drawn first (random over draws). Monte-Carlo over ``trials``
    draws of k without replacement, as in :func:`majority_at_k`. ``equivalent`` does not change
    the result (no votes are pooled); it is accepted so all three methods share one signature.

    Raises ValueError unless 1 <= k <= N and trials >= 1, or if a sample with an answer has no
    finite score.
    """)


def _stream(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for `key` under `seed` (SeedSequence spawn keys never collide)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _problem_value(p: _Prepared, k: int, method: str, rng: np.random.Generator, trials: int) -> float:
    if method == "coverage":
        return pass_at_k(p.n, p.num_correct, k)
    if method == "majority":
        return _select(p, k, rng, trials, "majority")
    if method == "weighted":
        return _select(p, k, rng, trials, "weighted")
    return _select(p, k, rng, trials, "verifier")


def selection_curve(
    problems: Sequence[Sequence[Sample]],
    ks: Sequence[int],
    method: str,
    *,
    seed: int = 0,
    trials: int = 200,
    bootstrap: int = 200,
    equivalent: Equivalent | None = None,
) -> list[dict]:
    """Accuracy of one selection method at each k, with a bootstrap 95% interval over problems.

    For every k in ``ks``: the mean over problems of the per-problem value, where ``method`` is
    ``"majority"`` (:func:`majority_at_k`), ``"weighted"`` (:func:`weighted_at_k`),
    ``"best_of"`` (:func:`best_of_at_k`) or ``"coverage"`` (exact :func:`pass_at_k` with c the
    number of correct samples; no sampling). So one large-N run per problem yields the whole
    curve, with error bars.

    The interval is the 2.5th and 97.5th percentile of the mean over ``bootstrap`` resamples
    of the problems with replacement (percentile bootstrap, Efron & Tibshirani, 1993). It
    reflects which problems happened to be in the set, the dominant uncertainty in a benchmark;
    the Monte-Carlo error of each per-problem value is much smaller for ``trials`` >= 100.
    The same resamples are used for every k, so the bands of one curve are coherent. With
    ``bootstrap=0`` no interval is computed and ``low`` and ``high`` are NaN.

    Deterministic given ``seed``: the Monte-Carlo draws of problem i at k come from their own
    stream derived from (seed, k, i), so adding a k or reordering ``ks`` does not change the
    other values. Answers are clustered once per problem for all ks.

    Returns one dict per k, in the order of ``ks``: ``{"k", "value", "low", "high"}``.
    Raises ValueError for an unknown method, no problems, a k < 1 or a k larger than the
    smallest N, trials < 1 or bootstrap < 0.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(METHODS)}")
    if len(problems) == 0:
        raise ValueError("selection_curve() needs at least one problem")
    trials = _check_trials(trials)
    bootstrap = operator.index(bootstrap)
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    ks = [operator.index(k) for k in ks]
    sizes = [len(samples) for samples in problems]
    smallest = min(sizes)
    for k in ks:
        if k < 1 or k > smallest:
            raise ValueError(
                f"k={k} is out of range: need 1 <= k <= N, and the smallest problem has N={smallest} "
                f"samples (problem {sizes.index(smallest)})"
            )

    # Coverage and best-of never pool answers, so they skip the equivalence calls.
    grouping = equivalent if method in ("majority", "weighted") else None
    prepared = [_prepare(samples, grouping) for samples in problems]
    if method in ("weighted", "best_of"):
        for i, p in enumerate(prepared):
            try:
                _require_scores(p, method)
            except ValueError as e:
                raise ValueError(f"problem {i}: {e}") from None

    num = len(prepared)
    resamples = _stream(seed, 0).integers(0, num, size=(bootstrap, num))
    curve = []
    for k in ks:
        values = np.array(
            [
                _problem_value(p, k, method, _stream(seed, 1, k, i), trials)
                for i, p in enumerate(prepared)
            ]
        )
        value = float(values.mean())
        if bootstrap:
            low, high = (float(x) for x in np.percentile(values[resamples].mean(axis=1), [2.5, 97.5]))
        else:
            low = high = math.nan
        curve.append({"k": k, "value": value, "low": low, "high": high})
    return curve


# ------------------------------------------------------------------ scaling-law fit


@dataclass(frozen=True)
class PowerLawFit:
    """Coverage(k) ~= exp(a * k**b), the exponentiated power law of Brown et al. (2024).

    ``r2`` is the coefficient of determination of the linear fit in log(-log coverage) space;
    ``n_points`` is how many (k, coverage) points had 0 < coverage < 1 and were used.
    """

    a: float
    b: float
    r2: float
    n_points: int = 0

    def predict(self, k):
        """Predicted coverage at k (a scalar, or an array for an array of k)."""
        out = np.exp(self.a * np.power(np.asarray(k, dtype=np.float64), self.b))
        return float(out) if out.ndim == 0 else out


def fit_power_law_coverage(ks: Sequence[float], coverage: Sequence[float]) -> PowerLawFit:
    """Fit Brown et al.'s (2024) exponentiated power law coverage(k) ~= exp(a * k**b).

    Taking logs twice makes it linear: log(-log c) = log(-a) + b * log k, so ordinary least
    squares on (log k, log(-log c)) gives b (slope) and a = -exp(intercept) < 0; for coverage
    that rises with k, b < 0 as well. Only points with 0 < c < 1 (and k > 0) are usable: at 0
    or 1 the double log is infinite. Extrapolating the fit predicts how many samples a target
    coverage needs.

    Raises ValueError if ks and coverage differ in length, or fewer than 2 usable points with
    distinct k remain.
    """
    k_arr = np.asarray(ks, dtype=np.float64).ravel()
    c_arr = np.asarray(coverage, dtype=np.float64).ravel()
    if k_arr.shape != c_arr.shape:
        raise ValueError(f"ks and coverage differ in length: {k_arr.size} vs {c_arr.size}")
    usable = (c_arr > 0) & (c_arr < 1) & (k_arr > 0) & np.isfinite(k_arr)
    x, y = np.log(k_arr[usable]), np.log(-np.log(c_arr[usable]))
    if np.unique(x).size < 2:
        raise ValueError(
            f"fit_power_law_coverage needs at least 2 points with 0 < coverage < 1 at distinct k; "
            f"got {int(usable.sum())} usable of {k_arr.size}"
        )
    b, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + b * x)
    ss_res = float(residual @ residual)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return PowerLawFit(a=-math.exp(intercept), b=float(b), r2=r2, n_points=int(usable.sum()))


# --------------------------------------------------------------------------- cost


def usage_per_problem(usages: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean and total compute over problems, one usage mapping per problem.

    Reads ``generated_tokens``, ``prompt_tokens``, ``verifier_tokens`` and ``flops`` (e.g. from
    ``ttc.core.types.Usage.to_dict()``); a missing key counts as 0, since e.g. a run without a
    verifier has no verifier tokens. Returns ``mean_<key>`` and ``total_<key>`` for each, plus
    ``problems``: the cost side of an accuracy-vs-compute plot.
    Raises ValueError on no problems.
    """
    if len(usages) == 0:
        raise ValueError("usage_per_problem() needs at least one problem")
    out: dict[str, float] = {"problems": len(usages)}
    for key in USAGE_KEYS:
        column = np.array([float(u.get(key, 0) or 0) for u in usages], dtype=np.float64)
        out[f"mean_{key}"] = float(column.mean())
        out[f"total_{key}"] = float(column.sum())
    return out
