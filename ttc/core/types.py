"""Core vocabulary shared by every layer: problems, requests, trajectories, solutions.

Plain dataclasses (not pydantic) because they are created per sample in hot
loops; user-facing configuration lives in pydantic models elsewhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort", "budget", "max_steps"]


@dataclass(frozen=True)
class Problem:
    """A prompt plus what is known about its answer."""

    prompt: str
    id: str | None = None
    reference: str | None = None  # reference answer, when known (for coverage / metrics)
    system: str | None = None  # optional system message for chat models
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request; built from validated options by `ttc.core.config.SamplingOptions.params`."""

    n: int = 1
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # number of top logprobs per token; 0 = chosen token only
    seed: int | None = None

    def replace(self, **changes) -> "SamplingParams":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt (already rendered to the model's text format) and its sampling params."""

    prompt: str
    params: SamplingParams
    #: The prefix this request continues (its problem's rendered prompt), so a pool of replicas can
    #: send it where that prefix is cached; None when there is none. Backends may ignore it.
    affinity: str | None = None


@dataclass
class Completion:
    """One sampled continuation."""

    text: str
    num_tokens: int
    finish_reason: FinishReason
    token_logprobs: list[float] | None = None  # logprob of each chosen token, when asked for
    #: The stop string that ended the sample (it is included in `text`); None for EOS or length.
    stop_reason: str | None = None
    #: Per position, the top alternatives {token text: logprob}, when logprobs > 0 was asked for.
    top_logprobs: list[dict[str, float]] | None = None


@dataclass
class GenerationResult:
    """The completions of one request and what its prompt cost."""

    completions: list[Completion]
    #: Prompt tokens processed, once per sequence: n samples of a 100-token prompt are 100n, since
    #: each sequence needs the prompt's context. Of those, what the backend served from its cache
    #: (costs no FLOPs); a lower bound where the backend reports only part of it.
    prompt_tokens: int
    cached_prompt_tokens: int = 0
    #: Attempts of this request the backend lost before it succeeded (a retry after a timeout, a dead
    #: replica), and the tokens they may have used (an upper bound where the backend cannot tell).
    lost_requests: int = 0
    lost_tokens: int = 0


@dataclass
class Usage:
    """What a solve spent. FLOPs are estimated as 2 x parameters x tokens processed."""

    generated_tokens: int = 0
    prompt_tokens: int = 0  # once per sequence (see GenerationResult), cached ones included
    cached_prompt_tokens: int = 0
    verifier_tokens: int = 0
    flops: float = 0.0
    wall_s: float = 0.0
    requests: int = 0
    #: Compute paid for and not received: requests that failed, were retried, or were cut off (by the
    #: time cap or a failed sibling), and the tokens they may have used (the backend's count when it
    #: knows it, else what the request could have used at most: n x max_tokens, plus its prompt
    #: when a prompt-token or FLOPs cap had it counted).
    lost_requests: int = 0
    lost_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})


@dataclass
class Trajectory:
    """One candidate solution: its steps, token counts, scores and why it ended."""

    steps: list[str]
    num_tokens: int
    finish_reason: FinishReason
    step_scores: list[float] = field(default_factory=list)
    answer: str | None = None  # extracted final answer, if any
    token_logprobs: list[float] | None = None
    correct: bool | None = None  # filled only when a reference answer is known
    #: False while a step-level search may still extend it; whole samples are always finished.
    finished: bool = True
    #: Identity in a search tree (see Solution.trace); None outside step-level search.
    node_id: int | None = None
    parent_id: int | None = None

    @property
    def text(self) -> str:
        return "".join(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "steps": list(self.steps),
            "num_tokens": self.num_tokens,
            "finish_reason": self.finish_reason,
            "step_scores": list(self.step_scores),
            "answer": self.answer,
            "correct": self.correct,
            "node_id": self.node_id,
        }


@dataclass
class Solution:
    """The result of a solve: the answer, how it was chosen, and what it cost."""

    answer: str | None
    strategy: str
    best: Trajectory | None
    candidates: list[Trajectory]
    usage: Usage
    trace: list[dict[str, Any]] = field(default_factory=list)  # search events, in order
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. coverage, vote shares
    problem: Problem | None = None

    @property
    def correct(self) -> bool | None:
        return self.best.correct if self.best is not None else None

    def to_dict(self, *, with_candidates: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.problem.id if self.problem else None,
            "answer": self.answer,
            "strategy": self.strategy,
            "correct": self.correct,
            "candidates": len(self.candidates),
            "usage": self.usage.to_dict(),
            "metrics": self.metrics,
        }
        if with_candidates:
            out["candidate_details"] = [c.to_dict() for c in self.candidates]
        return out
