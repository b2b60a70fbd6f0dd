"""The declared plugin protocol: Generator, Scorer and Strategy, with every hook and capability.

Backends (workers/) implement Generator; verifiers (verifiers/) implement
Scorer; search algorithms (strategies/) implement Strategy and reach compute only
through a SearchContext. Every hook a caller may use is declared here with a
default, so no caller asks `hasattr`: a plugin overrides what it needs. Each
plugin declares its pydantic `Config`, and `ttc.core.registry.build` makes one
from validated options with `from_config`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from ttc.core.config import StrictModel
from ttc.core.errors import ConfigError
from ttc.core.types import GenerationRequest, GenerationResult, Problem, Trajectory

if TYPE_CHECKING:  # only for annotations: the context is built on these interfaces
    from ttc.core.budget import Budget
    from ttc.core.context import SearchContext


class Plugin(abc.ABC):
    """What every plugin kind shares: a config class and construction from a validated config."""

    #: The plugin's options; `ttc.core.registry.build` validates user options against it.
    Config: ClassVar[type[StrictModel]] = StrictModel

    def __init__(self, config: StrictModel | None = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_config(cls, config: Any) -> "Plugin":
        """Build from a validated `Config` (override when the constructor takes other arguments)."""
        return cls(config)  # type: ignore[call-arg]


class Worker(Plugin):
    """Lifecycle shared by generators and scorers: start, liveness, close."""

    #: Parameter count of the model it runs, for FLOPs estimates; None when unknown or none.
    num_parameters: int | None = None
    #: True once the worker can serve nothing more (its engine died): the engine drops it and a replica
    #: pool replaces it. A worker that cannot die leaves it False.
    dead: bool = False

    def start(self) -> None:
        """Load synchronously, inside the event loop that will use the worker (vLLM binds to it)."""

    async def astart(self) -> None:
        """Load what needs awaiting (replica pools, async engines); called once before first use."""

    async def aclose(self) -> None:
        """Release the worker's resources."""


class Generator(Worker):
    """An async batch text generator (vLLM in-process, an HTTP server, a Ray pool, a fake)."""

    #: Model name for reports.
    model_name: str = "unknown"

    @abc.abstractmethod
    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Run all requests concurrently; one result per request, in order.

        Raise `ttc.core.errors.BackendError` when the backend fails.
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


@dataclass
class ScoreResult:
    """Per-step scores for each trajectory, the verifier tokens they cost, and the backend requests made."""

    step_scores: list[list[float]]
    verifier_tokens: int = 0
    #: Model calls the scoring made (a PRM pass: 1; self-evaluation: one per judged step; the oracle: 0).
    requests: int = 0
    #: Attempts lost before the scoring succeeded (a dead replica, a retry) and the verifier tokens
    #: they may have used, reported in `usage.lost_*` as generation's are.
    lost_requests: int = 0
    lost_tokens: int = 0


class Scorer(Worker):
    """Scores trajectories: per step for a PRM, one score (a one-element list) for an outcome verifier."""

    name: str = "scorer"
    #: Replica placement: True for scorers that hold a model of their own (PRMs), which run on their own
    #: pool of replicas under a `cluster:` section. Cheap scorers, and those that use the policy, stay
    #: in-process.
    runs_on_replicas: ClassVar[bool] = False
    #: True when scoring reads the generation's token logprobs: strategies then ask the generator for them.
    needs_logprobs: ClassVar[bool] = False
    #: True when the scorer asks the policy itself (self-evaluation): it runs where the policy is,
    #: and each solve gets its own copy bound to the policy (`for_solve`).
    uses_policy: ClassVar[bool] = False

    @abc.abstractmethod
    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        """Score a batch of trajectories of one problem."""

    def for_solve(self, policy: Generator) -> "Scorer":
        """The scorer one solve uses: this one, unless it keeps per-solve state. A scorer that asks the
        policy returns a copy bound to it, with caches of its own, so no solve is handed scores another
        one paid for (its verifier tokens would be under-reported)."""
        return self

    async def score_final(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        """The score of each whole trajectory only (a one-element row): what aggregation "last" reads.
        By default every step is scored and the last kept; a scorer that pays per step overrides it."""
        result = await self.score(problem, trajectories)
        rows = [list(row[-1:]) for row in result.step_scores]
        return ScoreResult(rows, result.verifier_tokens, result.requests)

    async def aestimate_final_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        """What `score_final` will cost (an upper bound, as `estimate_tokens`)."""
        return await self.aestimate_tokens(problem, trajectories)

    def estimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        """Verifier tokens a score call will cost, for reserving before it is sent: an upper bound
        (what `score` charges must not exceed it, or a verifier-token or FLOPs cap is not hard)."""
        return 0

    async def aestimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        """What the engine calls: `estimate_tokens`, or a remote round trip for a scorer pool."""
        return self.estimate_tokens(problem, trajectories)


@dataclass
class Outcome:
    """What a strategy returns: the chosen answer and trajectory, every candidate, figures to report."""

    answer: str | None
    best: Trajectory | None
    candidates: list[Trajectory]
    metrics: dict[str, Any] = field(default_factory=dict)


class Strategy(Plugin):
    """A search algorithm: pure control flow over a SearchContext (generate, score, record).

    A strategy never imports a backend; the same object runs on the fakes, on vLLM and on a Ray
    pool. What the engine or the allocator needs to know about it is declared here.
    """

    name: ClassVar[str]
    #: True when its N samples are independent draws of the prompt, so a probe of such samples can
    #: count among them (the allocator then charges the probe once).
    reuses_probe: ClassVar[bool] = False
    #: True when a batch of problems can share one budget under it (easy ones hand compute to hard ones).
    shares_budget: ClassVar[bool] = False

    def needs_scorer(self) -> bool:
        """Whether this configuration cannot run without a scorer."""
        return False

    def selection(self) -> str:
        """How the final answer is chosen (`ttc.core.selection` rule): majority, weighted, verifier or combined."""
        return "majority"

    def verifier_weight(self) -> float:
        """The combined rule's weight g of the verifier against the votes (see `ttc.core.selection`)."""
        return 1.0

    def width_multiple(self) -> int:
        """N sized from a budget is rounded down to a multiple of this (a beam search's beam width)."""
        return 1

    def shared_budget_entry(self) -> int:
        """With `shares_budget`: the generated tokens one problem spends before it takes part in a
        budget shared by a batch (`Engine.asolve_pooled`), e.g. auto's probe."""
        return 0

    def check(self, budget: "Budget", has_scorer: bool) -> None:
        """Reject a run that cannot work before any compute is spent."""
        if self.needs_scorer() and not has_scorer:
            raise ConfigError(f"strategy {self.name!r} (selection={self.selection()!r}) needs a verifier; "
                              "set one (e.g. verifier='mean_logprob')")

    @abc.abstractmethod
    async def run(self, ctx: "SearchContext") -> Outcome:
        """Spend the context's budget and pick an answer."""
