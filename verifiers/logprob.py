"""Confidence from the policy's own token log-probabilities: a verifier that costs nothing.

The score is the geometric-mean token probability, exp(mean log p), which lies
in (0, 1] so it can weight votes. It needs the generator to return logprobs;
strategies ask for them when a scorer sets `needs_logprobs`.
"""
from __future__ import annotations

import math
from typing import Sequence

from ttc.core.config import StrictModel
from ttc.core.errors import VerifierError
from ttc.core.plugins import Scorer, ScoreResult
from ttc.core.types import Problem, Trajectory


class MeanLogprobConfig(StrictModel):
    """No options: the score is exp(mean token logprob)."""


class MeanLogprobScorer(Scorer):
    name = "mean_logprob"
    Config = MeanLogprobConfig
    needs_logprobs = True

    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        scores = []
        for t in trajectories:
            if t.token_logprobs is None:
                raise VerifierError("mean_logprob needs token logprobs, but the generator returned none")
            lp = t.token_logprobs
            scores.append([math.exp(sum(lp) / len(lp)) if lp else 0.0])
        return ScoreResult(scores, 0)
