"""The two interfaces strategies are written against: Generator and Scorer.

Backends (workers/) implement them; strategies (strategies/) only call them,
through a SearchContext that charges the budget ledger. Neither side knows the
other.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence

from ttc.types import GenerationRequest, GenerationResult, Problem, Trajectory


class Generator(abc.ABC):
    """An async batch text generator (vLLM in-process, an HTTP server, a fake)."""

    #: Model name for reports.
    model_name: str = "unknown"
    #: Parameter count for FLOPs estimates; None when unknown.
    num_parameters: int | None = None

    @abc.abstractmethod
    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Run all requests concurrently; one result per request, in order.

        Raise `ttc.errors.BackendError` when the backend fails.
        """

    def render_prompt(self, problem: Problem) -> str:
        """Turn a problem into the text the model continues (chat template when there is one)."""
        return problem.prompt

    def count_tokens(self, text: str) -> int:
        """Token count of a prompt; used only when a prompt-token or FLOPs cap needs it."""
        return len(text.split())

    # The engine calls these async forms, so a backend whose tokenizer is remote (a Ray pool)
    # can wait for a live replica instead of blocking the event loop; local backends need not care.
    async def arender_prompt(self, problem: Problem) -> str:
        return self.render_prompt(problem)

    async def acount_tokens(self, text: str) -> int:
        return self.count_tokens(text)

    async def aclose(self) -> None:
        """Release the backend's resources."""


@dataclass
class ScoreResult:
    """Per-step scores for each trajectory, and the verifier tokens they cost."""

    step_scores: list[list[float]]
    verifier_tokens: int = 0


class Scorer(abc.ABC):
    """Scores trajectories: per step for a PRM, one score (a one-element list) for an outcome verifier."""

    name: str = "scorer"
    #: Parameter count of the scoring model for FLOPs estimates; None when it runs no model.
    num_parameters: int | None = None
    #: True for scorers that hold a model of their own (PRMs): with a `cluster:` section they run on
    #: their own pool of replicas. Cheap scorers, and those that use the policy, stay in-process.
    runs_on_replicas: bool = False

    @abc.abstractmethod
    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        """Score a batch of trajectories of one problem."""

    def estimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        """Verifier tokens a score call will cost, for capping before it is sent."""
        return 0

    async def aestimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        """What the engine calls: `estimate_tokens`, or a remote round trip for a scorer pool."""
        return self.estimate_tokens(problem, trajectories)

    async def aclose(self) -> None:
        """Release the scorer's resources."""
