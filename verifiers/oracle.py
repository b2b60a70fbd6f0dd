"""Oracle scorer: 1 for a candidate whose answer matches the reference, else 0.

For analysis only — it reads the answer key. It proves the mechanics of
verifier-guided strategies and gives the upper bound a perfect verifier would
reach; never report its accuracy as the engine's.
"""
from __future__ import annotations

from typing import Sequence

from ttc.core.config import StrictModel
from ttc.core.errors import VerifierError
from ttc.core.plugins import Scorer, ScoreResult
from ttc.core.types import Problem, Trajectory
from ttc.core.answers import answers_match


class OracleConfig(StrictModel):
    """No options: the score comes from the problem's reference answer."""


class OracleScorer(Scorer):
    name = "oracle"
    Config = OracleConfig

    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        if problem.reference is None:
            raise VerifierError("the oracle scorer needs a reference answer, and this problem has none")
        scores = []
        for t in trajectories:
            ok = t.answer is not None and answers_match(t.answer, problem.reference)
            scores.append([1.0 if ok else 0.0] * max(1, len(t.steps)))
        return ScoreResult(scores, 0)
