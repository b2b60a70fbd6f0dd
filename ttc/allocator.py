"""Compute-optimal allocation (Snell et al.): pick the strategy and settings per prompt difficulty.

A cheap probe (a few samples, charged to the budget and kept as candidates)
gives features of the prompt; its answer agreement places it in a difficulty
bin. For each bin, calibration recorded how accurate every configuration was at
every budget; the allocator picks the configuration whose accuracy, interpolated
between calibrated budgets (linear in log2 of tokens), is highest at the budget
that is left. Allocator files are versioned JSON with the grid and the data
they were fitted on described, loadable by path or by name from
`$TTC_HOME/allocators/NAME.json`.
"""
from __future__ import annotations

import bisect
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pydantic import Field

from ttc.config import StrictModel
from ttc.default_model import ttc_home
from ttc.errors import ConfigError
from ttc.types import Trajectory

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ProbeFeatures:
    """What a probe tells about a prompt; agreement is what the bins are cut on."""

    agreement: float  # share of probe samples giving the most common answer (0 when none answered)
    answered: float  # share of probe samples with any answer
    mean_logprob: float | None  # mean per-token log-probability of the probe samples
    mean_tokens: float

    def to_dict(self) -> dict[str, Any]:
        return {"agreement": self.agreement, "answered": self.answered, "mean_logprob": self.mean_logprob,
                "mean_tokens": self.mean_tokens}


def probe_features(samples: Sequence[Trajectory]) -> ProbeFeatures:
    from verifiers.answers import group_answers

    if not samples:
        return ProbeFeatures(0.0, 0.0, None, 0.0)
    clusters = group_answers([t.answer for t in samples])
    top = max((len(c) for c in clusters), default=0)
    lps = [sum(t.token_logprobs) / len(t.token_logprobs) for t in samples if t.token_logprobs]
    return ProbeFeatures(
        agreement=top / len(samples),
        answered=sum(t.answer is not None for t in samples) / len(samples),
        mean_logprob=sum(lps) / len(lps) if lps else None,
        mean_tokens=sum(t.num_tokens for t in samples) / len(samples),
    )


class ConfigChoice(StrictModel):
    """One configuration of the calibration grid."""

    label: str = Field(description="Name of the configuration in the grid.")
    strategy: str = Field(description="Strategy name.")
    options: dict[str, Any] = Field(default_factory=dict, description="Strategy options.")


class BinTable(StrictModel):
    """Per difficulty bin: accuracy of every configuration at every calibrated budget."""

    problems: int = Field(ge=0, description="Calibration problems in this bin.")
    accuracy: dict[str, dict[str, float]] = Field(
        description="config label -> {budget tokens: accuracy}, shrunk toward the overall rate (see fit).")
    tokens: dict[str, dict[str, float]] = Field(description="config label -> {budget: mean tokens spent}.")
    best: dict[str, str] = Field(description="budget tokens -> best config label at that budget.")


class AllocatorModel(StrictModel):
    """The allocator file: bins on probe agreement and, per bin, the best configuration per budget."""

    version: int = Field(FORMAT_VERSION, description="File format version.")
    created: str = Field(description="When it was fitted (UTC, ISO 8601).")
    feature: str = Field("agreement", description="The probe feature the bins are cut on.")
    edges: list[float] = Field(description="Inner bin edges on the feature, ascending; len(bins) - 1 of them.")
    probe_samples: int = Field(ge=1, description="Samples in the probe these bins were fitted on.")
    budgets: list[int] = Field(min_length=1, description="Calibrated per-problem budgets (generated tokens).")
    configs: list[ConfigChoice] = Field(min_length=1, description="The calibration grid.")
    bins: list[BinTable] = Field(min_length=1, description="Per bin, hardest (lowest agreement) first.")
    shrinkage: float = Field(0.0, ge=0.0, description="Pseudo-problems pulling each bin's rates to the overall rate.")
    data: dict[str, Any] = Field(default_factory=dict, description="What it was fitted on: dataset, model, counts.")

    def bin_of(self, features: ProbeFeatures) -> int:
        return bisect.bisect_right(self.edges, getattr(features, self.feature))

    def config(self, label: str) -> ConfigChoice:
        return next(c for c in self.configs if c.label == label)

    def accuracy_at(self, bin_index: int, label: str, budget: float) -> float:
        """Accuracy of a configuration at any budget: linear in log2(budget) between calibrated points."""
        curve = sorted((float(b), a) for b, a in self.bins[bin_index].accuracy.get(label, {}).items())
        if not curve:
            return -math.inf
        if budget <= curve[0][0]:
            return curve[0][1] if budget >= curve[0][0] * 0.999 else -math.inf  # cannot afford it at all
        for (b0, a0), (b1, a1) in zip(curve, curve[1:]):
            if budget <= b1:
                f = (math.log2(budget) - math.log2(b0)) / (math.log2(b1) - math.log2(b0))
                return a0 + f * (a1 - a0)
        return curve[-1][1]

    def choose(self, features: ProbeFeatures, budget: float, allowed: Sequence[str] | None = None) -> ConfigChoice:
        """The configuration with the best interpolated accuracy at `budget` for this prompt's bin."""
        b = self.bin_of(features)
        labels = [c.label for c in self.configs if allowed is None or c.label in allowed]
        if not labels:
            raise ConfigError("no configuration of the allocator can run here (each needs what is missing)")
        # Ties go to the cheaper configuration, then to grid order.
        best = max(labels, key=lambda l: (round(self.accuracy_at(b, l, budget), 9),
                                          -self._tokens_at(b, l, budget), -labels.index(l)))
        return self.config(best)

    def _tokens_at(self, bin_index: int, label: str, budget: float) -> float:
        tokens = self.bins[bin_index].tokens.get(label, {})
        usable = [t for bud, t in tokens.items() if float(bud) <= budget] or list(tokens.values()) or [0.0]
        return max(usable)


@dataclass
class Outcome:
    """One calibration observation: a problem, a configuration, a budget, and how it went."""

    problem_id: str
    config: str
    budget: int
    correct: bool
    tokens: float


def fit(features: dict[str, ProbeFeatures], outcomes: Sequence[Outcome], configs: Sequence[ConfigChoice], *,
        n_bins: int = 3, probe_samples: int, data: dict[str, Any] | None = None,
        shrinkage: float = 20.0) -> AllocatorModel:
    """Bins at quantiles of probe agreement; per bin and budget, each configuration's accuracy.

    A bin's accuracy is shrunk toward the configuration's accuracy over all bins, as if
    `shrinkage` pseudo-problems at the overall rate were added to the bin (empirical Bayes):
    with a few dozen calibration problems per bin, raw per-bin rates differ by noise alone, and
    an allocator that follows that noise does worse than the best fixed configuration.
    """
    if not features:
        raise ConfigError("calibration has no probed problems to fit on")
    edges = quantile_edges([f.agreement for f in features.values()], n_bins)
    n = len(edges) + 1
    budgets = sorted({o.budget for o in outcomes})
    acc: list[dict] = [defaultdict(lambda: defaultdict(list)) for _ in range(n)]
    tok: list[dict] = [defaultdict(lambda: defaultdict(list)) for _ in range(n)]
    members = [set() for _ in range(n)]
    for o in outcomes:
        f = features.get(o.problem_id)
        if f is None:
            continue
        b = bisect.bisect_right(edges, f.agreement)
        members[b].add(o.problem_id)
        acc[b][o.config][o.budget].append(float(o.correct))
        tok[b][o.config][o.budget].append(o.tokens)
    overall: dict[tuple[str, int], list[float]] = defaultdict(list)
    for b in range(n):
        for c, per in acc[b].items():
            for bud, v in per.items():
                overall[(c, bud)].extend(v)
    bins = []
    for b in range(n):
        accuracy = {c: {str(bud): (sum(v) + shrinkage * _mean(overall[(c, bud)])) / (len(v) + shrinkage)
                        for bud, v in per.items()} for c, per in acc[b].items()}
        tokens = {c: {str(bud): sum(v) / len(v) for bud, v in per.items()} for c, per in tok[b].items()}
        best = {}
        for bud in budgets:
            cands = [(a[str(bud)], -tokens[c][str(bud)], c) for c, a in accuracy.items() if str(bud) in a]
            if cands:
                best[str(bud)] = max(cands)[2]
        bins.append(BinTable(problems=len(members[b]), accuracy=accuracy, tokens=tokens, best=best))
    return AllocatorModel(created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), edges=edges,
                          probe_samples=probe_samples, budgets=budgets, configs=list(configs), bins=bins,
                          shrinkage=shrinkage, data=data or {})


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def quantile_edges(values: Sequence[float], n_bins: int) -> list[float]:
    """Bin edges that split `values` into n_bins groups as evenly as their distinct values allow.

    Probe agreement takes few distinct values (k/probe_samples), so plain quantiles often
    coincide; each edge is instead the distinct value whose rank is closest to a quantile.
    """
    ordered = sorted(values)
    distinct = sorted(set(ordered))[1:]  # an edge at the minimum would leave the first bin empty
    below = {v: bisect.bisect_left(ordered, v) for v in distinct}
    edges = set()
    for k in range(1, n_bins):
        target = len(ordered) * k / n_bins
        if distinct:
            edges.add(min(distinct, key=lambda v: (abs(below[v] - target), v)))
    return sorted(edges)


#: The choice "stop after the probe": no further compute, the probe's majority answer.
PROBE_ONLY = ConfigChoice(label="probe_only", strategy="probe_only", options={})


def allocator_path(name_or_path: str) -> Path:
    """A path as given, or a name looked up in $TTC_HOME/allocators/."""
    p = Path(name_or_path).expanduser()
    if p.suffix == ".json" or p.exists() or "/" in name_or_path:
        return p
    return ttc_home() / "allocators" / f"{name_or_path}.json"


def save(model: AllocatorModel, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(model.model_dump(mode="json"), indent=1))
    tmp.replace(path)
    return path


def load(name_or_path: str) -> AllocatorModel:
    from ttc.config import validate

    path = allocator_path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"allocator={name_or_path!r}: no allocator file at {path}; run `ttc calibrate` first")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"allocator file {path} is not valid JSON: {exc}") from None
    if data.get("version") != FORMAT_VERSION:
        raise ConfigError(f"allocator file {path} has version {data.get('version')!r}; this ttc reads "
                          f"version {FORMAT_VERSION}: recalibrate")
    return validate(AllocatorModel, data, prefix=str(path))
