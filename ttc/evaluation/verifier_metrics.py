"""How well a verifier separates right from wrong, and what that is worth in selection.

- `auroc`: P(score of a positive > score of a negative), ties counting one half (the
  Mann-Whitney statistic); None when one class is missing.
- `within_problem_auroc`: the same over pairs of candidates *of the same problem* only,
  pooled over problems (each right-wrong pair of a problem counts once). This is the one
  that decides selection: a verifier that merely tells easy problems from hard ones scores
  well on plain AUROC and is worthless for picking among one problem's candidates.
  Problems with only right or only wrong candidates contribute no pair.
- `selection_accuracy`: accuracy of each selection rule on the same candidates (so at
  exactly matched generated tokens), with `paired_bootstrap` for the interval of a gain.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

from ttc.core.selection import cluster_labels, pick_many


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    s = np.where(np.isnan(s), -np.inf, s)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def within_problem_auroc(items: Iterable[tuple[Hashable, bool, float]]) -> float | None:
    """`items`: (problem, correct, score) per candidate."""
    by_problem: dict[Hashable, list[tuple[bool, float]]] = defaultdict(list)
    for problem, correct, score in items:
        by_problem[problem].append((bool(correct), -math.inf if score is None or math.isnan(score) else score))
    wins, pairs = 0.0, 0
    for cands in by_problem.values():
        right = [s for c, s in cands if c]
        wrong = [s for c, s in cands if not c]
        for r in right:
            for w in wrong:
                wins += 1.0 if r > w else 0.5 if r == w else 0.0
        pairs += len(right) * len(wrong)
    return wins / pairs if pairs else None


def selection_accuracy(problems: Sequence[dict[str, Any]], rules: dict[str, tuple[str, float]]
                       ) -> dict[str, list[bool]]:
    """Per rule name, whether each problem's choice is correct. `problems`: {"answers", "correct",
    "scores"} per problem (the candidates in order); `rules`: name -> (rule, verifier_weight)."""
    out: dict[str, list[bool]] = {name: [] for name in rules}
    for p in problems:
        labels = np.asarray([cluster_labels(p["answers"])])
        scores = np.asarray([p["scores"]], dtype=np.float64) if p.get("scores") is not None else None
        for name, (rule, g) in rules.items():
            i = int(pick_many(labels, None if rule == "majority" else scores, rule, g)[0])
            out[name].append(bool(p["correct"][i]) if i >= 0 and p["answers"] else False)
    return out


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], *, samples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Mean of a - b (accuracy points x 100) and its percentile interval, resampling problems."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(diff) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return 100 * float(diff.mean()), 100 * float(lo), 100 * float(hi)


def fit_verifier_weight(problems: Sequence[dict[str, Any]], grid: Sequence[float] = (
        0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)) -> tuple[float, float]:
    """The weight g of the combined rule with the best accuracy on calibration problems (the smallest
    on ties, so a verifier that adds nothing leaves majority voting alone); (g, accuracy)."""
    best = (0.0, -1.0)
    for g in grid:
        acc = float(np.mean(selection_accuracy(problems, {"c": ("combined", g)})["c"])) if problems else 0.0
        if acc > best[1] + 1e-12:
            best = (g, acc)
    return best


def outvoted_recovered(problems: Sequence[dict[str, Any]], chosen_correct: Sequence[bool],
                       majority_correct: Sequence[bool]) -> dict[str, Any]:
    """Among problems whose right answer was sampled but the majority chose wrong: the share a rule
    recovers; and over all problems, how many it wins and loses against majority."""
    outvoted = [i for i, p in enumerate(problems) if any(p["correct"]) and not majority_correct[i]]
    recovered = sum(chosen_correct[i] for i in outvoted)
    wins = sum(c and not m for c, m in zip(chosen_correct, majority_correct))
    losses = sum(m and not c for c, m in zip(chosen_correct, majority_correct))
    return {"outvoted": len(outvoted), "recovered": recovered,
            "share": round(recovered / len(outvoted), 4) if outvoted else None, "wins": wins, "losses": losses}


def subsample(problems: Sequence[dict[str, Any]], k: int, seed: int = 0) -> list[dict[str, Any]]:
    """The first k candidates of each problem after a seeded shuffle (what k samples would have drawn)."""
    rng = random.Random(seed)
    out = []
    for p in problems:
        idx = list(range(len(p["answers"])))
        rng.shuffle(idx)
        idx = idx[:k]
        out.append({key: ([p[key][i] for i in idx] if isinstance(p.get(key), list) else p.get(key)) for key in p})
    return out
