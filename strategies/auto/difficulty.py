"""A prompt's difficulty, predicted from a cheap probe.

Snell et al. bin prompts by the policy's pass@1, which is only known after
spending a lot on a prompt. At run time there is only the probe, so
calibration fits a small logistic model from probe features to the pass@1
observed over every calibration sample of that prompt; the allocator's bins are
cut on that predicted pass@1. The features are generic (answer agreement and
spread, how many samples answered or hit the token cap, lengths) so the same
model shape works for any dataset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import Field

from ttc.core.config import StrictModel
from ttc.core.types import Trajectory


@dataclass(frozen=True)
class ProbeFeatures:
    """What a probe tells about a prompt."""

    agreement: float  # share of probe samples giving the most common answer (0 when none answered)
    answered: float  # share of probe samples with any answer
    mean_logprob: float | None  # mean per-token log-probability of the probe samples (traced, not modelled)
    mean_tokens: float
    distinct: float = 0.0  # distinct answers per probe sample: 1.0 when every sample disagrees
    truncated: float = 0.0  # share of probe samples cut off at max_tokens
    prompt_tokens: int = 0  # the prompt's length

    def to_dict(self) -> dict[str, Any]:
        return {"agreement": self.agreement, "answered": self.answered, "mean_logprob": self.mean_logprob,
                "mean_tokens": self.mean_tokens, "distinct": self.distinct, "truncated": self.truncated,
                "prompt_tokens": self.prompt_tokens}


def probe_features(samples: Sequence[Trajectory], prompt_tokens: int = 0) -> ProbeFeatures:
    from ttc.core.answers import group_answers

    if not samples:
        return ProbeFeatures(0.0, 0.0, None, 0.0, prompt_tokens=prompt_tokens)
    clusters = group_answers([t.answer for t in samples])
    top = max((len(c) for c in clusters), default=0)
    lps = [sum(t.token_logprobs) / len(t.token_logprobs) for t in samples if t.token_logprobs]
    n = len(samples)
    return ProbeFeatures(
        agreement=top / n,
        answered=sum(t.answer is not None for t in samples) / n,
        mean_logprob=sum(lps) / len(lps) if lps else None,
        mean_tokens=sum(t.num_tokens for t in samples) / n,
        distinct=len(clusters) / n,
        truncated=sum(t.finish_reason == "length" for t in samples) / n,
        prompt_tokens=prompt_tokens,
    )


#: The inputs of the difficulty model, in order.
FEATURES = ("agreement", "distinct", "answered", "truncated", "log_mean_tokens", "log_prompt_tokens")


def feature_vector(f: ProbeFeatures) -> list[float]:
    return [f.agreement, f.distinct, f.answered, f.truncated, math.log1p(f.mean_tokens),
            math.log1p(f.prompt_tokens)]


class DifficultyModel(StrictModel):
    """Logistic regression from standardised probe features to pass@1."""

    features: list[str] = Field(default_factory=lambda: list(FEATURES), description="Input names, in order.")
    mean: list[float] = Field(description="Per-feature mean on the calibration set.")
    scale: list[float] = Field(description="Per-feature standard deviation (1 where constant).")
    weights: list[float] = Field(description="Per-feature weight on the standardised value.")
    bias: float = Field(description="Intercept (log-odds).")

    def predict(self, f: ProbeFeatures) -> float:
        """Predicted pass@1 of the prompt the probe came from."""
        z = self.bias + sum(w * (x - m) / s for w, x, m, s in zip(self.weights, feature_vector(f), self.mean,
                                                                   self.scale))
        return _sigmoid(z)


def fit_difficulty(features: Sequence[ProbeFeatures], pass1: Sequence[float], *, l2: float = 1.0,
                   iterations: int = 25) -> DifficultyModel:
    """Ridge-penalised logistic regression on soft targets (each prompt's observed pass@1), by Newton steps.

    The penalty keeps the fit stable on a few dozen prompts and with features that are
    constant on the calibration set (their weight stays 0).
    """
    rows = [feature_vector(f) for f in features]
    d = len(FEATURES)
    mean = [sum(r[j] for r in rows) / len(rows) for j in range(d)]
    scale = []
    for j in range(d):
        var = sum((r[j] - mean[j]) ** 2 for r in rows) / len(rows)
        scale.append(math.sqrt(var) if var > 1e-12 else 1.0)
    xs = [[1.0] + [(r[j] - mean[j]) / scale[j] for j in range(d)] for r in rows]
    ys = [min(max(float(y), 0.0), 1.0) for y in pass1]
    w = [0.0] * (d + 1)
    base = sum(ys) / len(ys)
    w[0] = math.log(max(base, 1e-3) / max(1.0 - base, 1e-3))
    for _ in range(iterations):
        grad = [0.0] * (d + 1)
        hess = [[0.0] * (d + 1) for _ in range(d + 1)]
        for x, y in zip(xs, ys):
            p = _sigmoid(sum(a * b for a, b in zip(w, x)))
            r, v = p - y, max(p * (1 - p), 1e-9)
            for i in range(d + 1):
                grad[i] += r * x[i]
                for j in range(d + 1):
                    hess[i][j] += v * x[i] * x[j]
        for i in range(1, d + 1):  # the intercept is not penalised
            grad[i] += l2 * w[i]
            hess[i][i] += l2
        step = _solve(hess, grad)
        w = [a - b for a, b in zip(w, step)]
        if max(abs(s) for s in step) < 1e-8:
            break
    return DifficultyModel(mean=mean, scale=scale, weights=w[1:], bias=w[0])


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the systems here are 7x7 and positive definite)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        if abs(m[c][c]) < 1e-12:
            continue
        for r in range(c + 1, n):
            f = m[r][c] / m[c][c]
            for k in range(c, n + 1):
                m[r][k] -= f * m[c][k]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        if abs(m[r][r]) < 1e-12:
            continue
        x[r] = (m[r][n] - sum(m[r][k] * x[k] for k in range(r + 1, n))) / m[r][r]
    return x
