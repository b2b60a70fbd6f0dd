"""The recorded verifier scores of replayed samples (the scorer that goes with `workers.replay`).

When calibration replays a problem's recorded samples to a strategy, a weighted or
best-by-verifier choice must see the scores those samples had when they were drawn,
not new ones: this scorer returns them.
"""
from __future__ import annotations

import math
from typing import Sequence

from ttc.core.errors import VerifierError
from ttc.core.plugins import Scorer, ScoreResult
from ttc.core.types import Problem, Trajectory
from workers.replay import ReplayGenerator


class ReplayScorer(Scorer):
    """Scores each trajectory a `ReplayGenerator` served with its recorded score (one score per
    trajectory, as an outcome verifier), charging the recorded verifier tokens (0 unless recorded).

    A sample recorded without a score gets NaN, which the selection rule (`ttc.core.selection`)
    weighs as no score at all; a trajectory the generator never served cannot have been
    recorded, and is refused with a VerifierError.
    """

    name = "replay"

    def __init__(self, generator: ReplayGenerator):
        super().__init__()
        self.generator = generator

    def _samples(self, trajectories: Sequence[Trajectory]):
        found = [self.generator.sample_of(t.text) for t in trajectories]
        if any(s is None for s in found):
            raise VerifierError("the replay scorer was asked to score a trajectory its generator never served")
        return found

    def estimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        return sum(s.verifier_tokens for s in self._samples(trajectories))

    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        samples = self._samples(trajectories)
        return ScoreResult([[math.nan if s.score is None else float(s.score)] for s in samples],
                           sum(s.verifier_tokens for s in samples))
