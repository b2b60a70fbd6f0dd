"""A deterministic fake of the Scorer interface (the `fake` verifier).

Part of the public surface (re-exported by `ttc.testing`): it scores by answer
or by step text with seeded noise, and charges verifier tokens per step, so
verifier-guided strategies and budget caps can be tested without a model.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from pydantic import Field

from ttc.core.config import StrictModel
from ttc.core.plugins import Scorer, ScoreResult
from ttc.core.types import Problem, Trajectory
from workers.fake import seeded_rng


class FakeScorerConfig(StrictModel):
    """Options of the fake scorer when it is chosen by name (verifier='fake')."""

    by_answer: dict[str, float] = Field(default_factory=dict, description="Answer -> mean score of a finished trajectory.")
    noise: float = Field(0.0, ge=0.0, le=1.0, description="Spread of seeded uniform noise.")
    seed: int = Field(0, description="Seed of the noise.")
    tokens_per_step: int = Field(10, ge=0, description="Verifier tokens charged per scored step.")
    default: float = Field(0.5, ge=0.0, le=1.0, description="Score of unfinished or unlisted trajectories.")


class FakeScorer(Scorer):
    """Scores each step by a function of the trajectory's answer (or of the step), plus seeded noise.

    `by_answer` maps a finished trajectory's answer to its mean score (unfinished ones get
    `default`); `by_step` instead scores each step from its text; `noise` is the spread of
    uniform noise, seeded by the step's prefix so a step keeps its score when rescored; each
    scored step costs `tokens_per_step` verifier tokens.
    """

    name = "fake"
    Config = FakeScorerConfig
    runs_on_replicas = True  # stands in for a PRM, so the scorer pool is exercised with fakes

    @classmethod
    def from_config(cls, config: FakeScorerConfig) -> "FakeScorer":
        return cls(config.by_answer, noise=config.noise, seed=config.seed,
                   tokens_per_step=config.tokens_per_step, default=config.default)

    def __init__(self, by_answer: Mapping[str, float] | None = None, *, noise: float = 0.0, seed: int = 0,
                 tokens_per_step: int = 10, default: float = 0.5,
                 by_step: Callable[[str], float] | None = None):
        self.by_answer = dict(by_answer or {})
        self.by_step = by_step  # score each step from its own text, when given
        self.noise = noise
        self.seed = seed
        self.tokens_per_step = tokens_per_step
        self.default = default
        self.calls = 0

    def estimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        return sum(len(t.steps) for t in trajectories) * self.tokens_per_step

    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        self.calls += 1
        scores = []
        for t in trajectories:
            base = self.by_answer.get(t.answer, self.default) if t.finished else self.default
            row = []
            for k, step in enumerate(t.steps):
                rng = seeded_rng(self.seed, problem.prompt, "".join(t.steps[: k + 1]))
                mean = self.by_step(step) if self.by_step else base
                row.append(min(1.0, max(0.0, mean + self.noise * (rng.random() - 0.5))))
            scores.append(row)
        return ScoreResult(scores, self.estimate_tokens(problem, trajectories), requests=1)
