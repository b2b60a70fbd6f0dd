"""Compute-optimal allocation (Snell et al.): pick the strategy and settings per prompt difficulty.

A cheap probe (a few samples, charged to the budget and kept as candidates)
gives features of the prompt; a small model fitted at calibration turns them
into a predicted pass@1, which places the prompt in a difficulty bin. For each
bin, calibration recorded how accurate every configuration was at every budget
and what it spent; the allocator picks the configuration and budget with the
best accuracy for the compute (see `AllocatorModel.decide`). Allocator files are versioned JSON with the grid and the data
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

from ttc.core.config import StrictModel
from ttc.core.paths import ttc_home
from strategies.auto.difficulty import DifficultyModel, ProbeFeatures, fit_difficulty, probe_features  # noqa: F401 (re-export)
from ttc.core.errors import ConfigError

FORMAT_VERSION = 3

#: The pseudo-strategy of the "stop after the probe" choice (no strategy of the registry).
PROBE_ONLY_STRATEGY = "probe_only"


class ConfigChoice(StrictModel):
    """One configuration of the calibration grid."""

    label: str = Field(description="Name of the configuration in the grid.")
    strategy: str = Field(description="Strategy name.")
    options: dict[str, Any] = Field(default_factory=dict, description="Strategy options.")

    def build(self, **sampling: Any) -> Any:
        """The configured strategy (its options over the given sampling options), through the one builder."""
        from ttc.core.registry import build

        return build("strategy", self.strategy, {**sampling, **self.options})

    @property
    def reuses_probe(self) -> bool:
        """Whether the probe's samples count among this configuration's N (declared by the strategy)."""
        if self.strategy == PROBE_ONLY_STRATEGY:
            return True
        from ttc.core.registry import STRATEGIES

        return STRATEGIES.get(self.strategy).reuses_probe

    @property
    def selection(self) -> str:
        """How this configuration picks its answer (declared by the strategy; the probe votes)."""
        return "majority" if self.strategy == PROBE_ONLY_STRATEGY else self.build().selection()

    @property
    def verifier_weight(self) -> float:
        """The combined rule's weight g, as the configured strategy declares it."""
        return 1.0 if self.strategy == PROBE_ONLY_STRATEGY else self.build().verifier_weight()


class BinTable(StrictModel):
    """Per difficulty bin: accuracy of every configuration at every calibrated budget."""

    problems: int = Field(ge=0, description="Calibration problems in this bin.")
    accuracy: dict[str, dict[str, float]] = Field(
        description="config label -> {budget tokens: accuracy}, shrunk toward the overall rate (see fit).")
    tokens: dict[str, dict[str, float]] = Field(description="config label -> {budget: mean tokens spent}.")
    best: dict[str, str] = Field(description="budget tokens -> best config label at that budget.")


class AllocatorModel(StrictModel):
    """The allocator file: a difficulty model, bins on its prediction, and per bin every configuration's curve."""

    version: int = Field(FORMAT_VERSION, description="File format version.")
    created: str = Field(description="When it was fitted (UTC, ISO 8601).")
    feature: str = Field("predicted_pass1", description="What the bins are cut on.")
    difficulty: DifficultyModel = Field(description="Probe features -> predicted pass@1.")
    edges: list[float] = Field(description="Inner bin edges on predicted pass@1, ascending; len(bins) - 1 of them.")
    probe_samples: int = Field(ge=1, description="Samples in the probe these bins were fitted on.")
    budgets: list[int] = Field(min_length=1, description="Calibrated per-problem budgets (generated tokens).")
    configs: list[ConfigChoice] = Field(min_length=1, description="The calibration grid.")
    bins: list[BinTable] = Field(min_length=1, description="Per bin, hardest (lowest predicted pass@1) first.")
    shrinkage: float = Field(0.0, ge=0.0, description="Pseudo-problems pulling each bin's rates to the overall rate.")
    price_per_1k_tokens: float = Field(
        0.0, ge=0.0, description="auto's price of compute, chosen at calibration by cross-fitting: the accuracy "
                                 "1000 more generated tokens must buy for a prompt (see decide).")
    stop_margin: int = Field(
        0, ge=0, description="auto's early stop, chosen at calibration: best-of-N samples in rounds of the probe's "
                             "size and stops once the leading answer has this many more votes than the next "
                             "(0 = draw all N at once).")
    data: dict[str, Any] = Field(default_factory=dict, description="What it was fitted on: dataset, model, counts.")

    def bin_of(self, features: ProbeFeatures) -> int:
        return bisect.bisect_right(self.edges, self.difficulty.predict(features))

    def config(self, label: str) -> ConfigChoice:
        return next(c for c in self.configs if c.label == label)

    def accuracy_at(self, bin_index: int, label: str, budget: float) -> float:
        """Accuracy of a configuration at any budget: linear in log2(budget) between calibrated points."""
        return _interpolate(self.bins[bin_index].accuracy.get(label, {}), budget, log=True)

    def tokens_at(self, bin_index: int, label: str, budget: float) -> float:
        """Mean tokens a configuration spent at any budget: linear in budget between calibrated points."""
        return _interpolate(self.bins[bin_index].tokens.get(label, {}), budget, log=False)

    def decide(self, features: ProbeFeatures, budget: float, *, probe_tokens: float = 0.0,
               probe_budget: float = 0.0, allowed: Sequence[str] | None = None,
               price_per_1k_tokens: float | None = None) -> "Decision":
        """The configuration and budget with the best accuracy-for-compute for this prompt's bin.

        `budget` is the prompt's whole budget and `probe_tokens` what the probe already spent.
        Best-of-N (and "probe only") count the probe's samples among their N, so they can use
        the whole budget; any other strategy starts afresh with what is left. Candidates are
        every calibrated budget that fits, and the budget itself (interpolated). Each is valued
        at accuracy - price_per_1k_tokens * total tokens / 1000: with 0 this is the most accurate
        choice; above 0, more compute is bought only where calibration showed it gains at least
        that much accuracy per 1000 tokens for prompts like this one, so easy and hopeless prompts
        stop early and the budget goes where it pays. The price is linear in tokens because what a
        batch spends is the sum over its prompts: maximising total accuracy under a total token
        budget means buying, on every prompt, exactly the tokens worth more than one common price
        (a Lagrange multiplier). None means the file's calibrated price.
        `probe_budget` is what the probe was allowed (samples x max_tokens): a probe-reusing
        configuration at a smaller budget would have fewer samples than the probe already has.
        """
        if price_per_1k_tokens is None:
            price_per_1k_tokens = self.price_per_1k_tokens
        b = self.bin_of(features)
        labels = [c.label for c in self.configs if allowed is None or c.label in allowed]
        if not labels:
            raise ConfigError("no configuration of the allocator can run here (each needs what is missing)")
        best: tuple | None = None
        for label in labels:
            reuses_probe = self.config(label).reuses_probe
            room = budget if reuses_probe else budget - probe_tokens
            for bud in sorted({float(x) for x in self.budgets if x <= room} | {float(room)}):
                accuracy = self.accuracy_at(b, label, bud)
                # A shared-budget share can leave less than the probe's budget: the whole budget then still qualifies.
                floor = min(max(probe_tokens, probe_budget), room) if reuses_probe else 0.0
                if accuracy == -math.inf or bud < floor:
                    continue  # unaffordable, or smaller than the probe already run (which cannot be undone)
                tokens = self.tokens_at(b, label, bud)
                tokens = max(tokens, probe_tokens) if reuses_probe else tokens + probe_tokens
                value = accuracy - price_per_1k_tokens * tokens / 1000.0
                # Ties go to fewer tokens, then to grid order.
                key = (round(value, 9), -tokens, -labels.index(label))
                if best is None or key > best[0]:
                    best = (key, Decision(config=self.config(label), budget=int(bud), bin=b,
                                          expected_accuracy=accuracy, expected_tokens=tokens))
        if best is None:
            raise ConfigError(f"budget={budget}: below every calibrated budget {self.budgets} of the allocator")
        return best[1]


def vote_settled(counts: Sequence[int], stop_margin: int) -> bool:
    """Whether a vote with these per-answer counts is settled: the leading answer has at least
    `stop_margin` more votes than the runner-up (0 = never settled early). Raw counts, also for a
    weighted vote: a margin in samples means the same on every verifier's scale."""
    if stop_margin <= 0:
        return False
    top = sorted(counts, reverse=True)[:2] + [0, 0]
    return top[0] - top[1] >= stop_margin


@dataclass(frozen=True)
class Decision:
    """What the allocator picked for one prompt, and what calibration expects of it."""

    config: ConfigChoice
    budget: int  # generated tokens for the chosen configuration (the whole budget, for probe-reusing ones)
    bin: int
    expected_accuracy: float
    expected_tokens: float

    @property
    def label(self) -> str:
        return self.config.label


def _interpolate(points: dict[str, float], budget: float, *, log: bool) -> float:
    """A calibrated curve at any budget; -inf below its first point, flat beyond its last."""
    curve = sorted((float(b), v) for b, v in points.items())
    if not curve:
        return -math.inf
    if budget <= curve[0][0]:
        return curve[0][1] if budget >= curve[0][0] * 0.999 else -math.inf  # cannot afford it at all
    f_ = (lambda x: math.log2(x)) if log else (lambda x: x)
    for (b0, v0), (b1, v1) in zip(curve, curve[1:]):
        if budget <= b1:
            return v0 + (f_(budget) - f_(b0)) / (f_(b1) - f_(b0)) * (v1 - v0)
    return curve[-1][1]


@dataclass
class Outcome:
    """One calibration observation: a problem, a configuration, a budget, and how it went."""

    problem_id: str
    config: str
    budget: int
    correct: float  # 1.0 or 0.0 for one run; or the expected accuracy over subsets of recorded samples
    tokens: float


def fit(features: dict[str, ProbeFeatures], outcomes: Sequence[Outcome], configs: Sequence[ConfigChoice], *,
        n_bins: int = 3, probe_samples: int, data: dict[str, Any] | None = None,
        shrinkage: float = 20.0, pass1: dict[str, float] | None = None) -> AllocatorModel:
    """Difficulty model, bins at quantiles of predicted pass@1, and per bin each configuration's curve.

    `pass1` is each problem's observed pass@1 over all its calibration samples (what the
    difficulty model learns to predict); without it, the share of its outcomes that were correct.
    A bin's accuracy is shrunk toward a prior, as if `shrinkage` pseudo-problems at the prior's
    rate were added to the bin (empirical Bayes): with a few dozen calibration problems per bin,
    raw per-bin rates differ by noise alone, and an allocator that follows that noise does worse
    than the best fixed configuration. The prior is the configuration's rate over all bins
    shifted by the bin's own level, so a hopeless bin stays hopeless.
    """
    if not features:
        raise ConfigError("calibration has no probed problems to fit on")
    if pass1 is None:
        seen: dict[str, list[float]] = defaultdict(list)
        for o in outcomes:
            seen[o.problem_id].append(float(o.correct))
        pass1 = {p: _mean(v) for p, v in seen.items()}
    ids = sorted(p for p in features if p in pass1)
    if not ids:
        raise ConfigError("calibration has no probed problem with an observed outcome to fit on")
    difficulty = fit_difficulty([features[p] for p in ids], [pass1[p] for p in ids])
    predicted = {p: difficulty.predict(f) for p, f in features.items()}
    edges = quantile_edges(list(predicted.values()), n_bins)
    n = len(edges) + 1
    budgets = sorted({o.budget for o in outcomes})
    acc: list[dict] = [defaultdict(lambda: defaultdict(list)) for _ in range(n)]
    tok: list[dict] = [defaultdict(lambda: defaultdict(list)) for _ in range(n)]
    members = [set() for _ in range(n)]
    for o in outcomes:
        if o.problem_id not in predicted:
            continue
        b = bisect.bisect_right(edges, predicted[o.problem_id])
        members[b].add(o.problem_id)
        acc[b][o.config][o.budget].append(float(o.correct))
        tok[b][o.config][o.budget].append(o.tokens)
    overall: dict[tuple[str, int], list[float]] = defaultdict(list)  # (config, budget) over all bins
    level: dict[tuple[int | None, int], list[float]] = defaultdict(list)  # (bin or None = all, budget) over configs
    for b in range(n):
        for c, per in acc[b].items():
            for bud, v in per.items():
                overall[(c, bud)].extend(v)
                level[(b, bud)].extend(v)
                level[(None, bud)].extend(v)

    def prior(b: int, c: str, bud: int) -> float:
        # The configuration's overall rate, moved by how much easier or harder this bin is than
        # the average (measured over all configurations, so with far less noise): a bin keeps its
        # own level, and only the differences between configurations are pooled.
        shift = _mean(level[(b, bud)]) - _mean(level[(None, bud)])
        return min(1.0, max(0.0, _mean(overall[(c, bud)]) + shift))

    bins = []
    for b in range(n):
        accuracy = {c: {str(bud): (sum(v) + shrinkage * prior(b, c, bud)) / (len(v) + shrinkage)
                        for bud, v in per.items()} for c, per in acc[b].items()}
        tokens = {c: {str(bud): sum(v) / len(v) for bud, v in per.items()} for c, per in tok[b].items()}
        best = {}
        for bud in budgets:
            cands = [(a[str(bud)], -tokens[c][str(bud)], c) for c, a in accuracy.items() if str(bud) in a]
            if cands:
                best[str(bud)] = max(cands)[2]
        bins.append(BinTable(problems=len(members[b]), accuracy=accuracy, tokens=tokens, best=best))
    return AllocatorModel(created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), difficulty=difficulty,
                          edges=edges, probe_samples=probe_samples, budgets=budgets, configs=list(configs),
                          bins=bins, shrinkage=shrinkage, data=data or {})


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def quantile_edges(values: Sequence[float], n_bins: int) -> list[float]:
    """Bin edges that split `values` into n_bins groups as evenly as their distinct values allow.

    Predicted difficulty takes only as many distinct values as there are distinct probes (few,
    with a 4-sample probe), so plain quantiles often coincide; each edge is instead the
    distinct value whose rank is closest to a quantile.
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
PROBE_ONLY = ConfigChoice(label="probe_only", strategy=PROBE_ONLY_STRATEGY, options={})


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
    from ttc.core.config import validate

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
