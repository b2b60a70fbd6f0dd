"""Self-evaluation: the policy model judges its own steps, P(yes) read from logprobs.

It lets step-level search run end to end on the embedded model on a CPU, with
no separate PRM. On SmolLM2-135M this signal is known to be weak — even
anti-correlated with correctness on arithmetic — so expect PRM-guided search
with it to lose to majority vote there; it proves the search mechanics, and on
a stronger policy it is a real, if costly, verifier. Its requests are charged
as verifier tokens, not as generated policy tokens.
"""
from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from typing import Literal, Sequence

from pydantic import Field

from ttc.core.config import SamplingOptions, StrictModel
from ttc.core.errors import VerifierError
from ttc.core.plugins import Generator, Scorer, ScoreResult
from ttc.core.types import GenerationRequest, Problem, Trajectory

_CACHE_SIZE = 100_000
#: The judge's answer: one greedy token, whose top alternatives carry P(yes).
_ONE_GREEDY_TOKEN = SamplingOptions(max_tokens=1, temperature=0.0)


class SelfEvalConfig(StrictModel):
    """How the policy is asked to judge a step."""

    question: str = Field("Is the last step above correct? Answer Yes or No.",
                          min_length=1, description="Question asked after the solution so far.")
    context: Literal["path", "separate"] = Field(
        "path", description="'path': the question follows the trajectory in the policy's own context, so "
                            "the prefix cache serves the problem and the steps and only the question is "
                            "computed; 'separate': a new conversation that quotes the problem and the steps.")
    yes: list[str] = Field(default_factory=lambda: ["yes"], min_length=1,
                           description="Answer tokens meaning yes (compared stripped, lower-case).")
    no: list[str] = Field(default_factory=lambda: ["no"], min_length=1,
                          description="Answer tokens meaning no (compared stripped, lower-case).")
    top_logprobs: int = Field(10, ge=2, le=20, description="Alternatives read at the answer position.")


class SelfEvalScorer(Scorer):
    name = "self_eval"
    Config = SelfEvalConfig
    uses_policy = True

    def __init__(self, config: SelfEvalConfig | None = None, generator: Generator | None = None):
        super().__init__(config)
        self.generator = generator
        self.num_parameters = generator.num_parameters if generator is not None else None
        # Step scores of prefixes this solve already judged: search rescoring a trajectory pays only for
        # new steps. One solve's cache: another solve pays for its own judgements.
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._yes = {w.strip().lower() for w in self.config.yes}
        self._no = {w.strip().lower() for w in self.config.no}

    def for_solve(self, policy: Generator) -> "SelfEvalScorer":
        """A judge bound to the solve's policy, with its own cache."""
        return SelfEvalScorer(self.config, policy)

    def _question(self, problem: Problem, prefix: str) -> Problem:
        return Problem(prompt=f"Problem: {problem.prompt}\n\nSolution so far:\n{prefix.rstrip()}\n\n{self.config.question}")

    def _on_path(self, rendered_problem: str, prefix: str) -> str:
        """The judge's prompt as a continuation of the trajectory: what generation already sent, then the question."""
        return rendered_problem + prefix + ("" if prefix.endswith("\n") else "\n\n") + self.config.question + "\n"

    def _prompt(self, problem: Problem, prefix: str) -> str:
        if self.config.context == "path":
            return self._on_path(self.generator.render_prompt(problem), prefix)
        return self.generator.render_prompt(self._question(problem, prefix))

    async def _aprompt(self, problem: Problem, prefix: str) -> str:
        # Async: with a replica pool as the policy, rendering is a remote call that must not block the loop.
        if self.config.context == "path":
            return self._on_path(await self.generator.arender_prompt(problem), prefix)
        return await self.generator.arender_prompt(self._question(problem, prefix))

    @staticmethod
    def _judged(problem: Problem, t: Trajectory, final_only: bool) -> list[tuple[str, str]]:
        """The prefixes of `t` whose last step is judged: every one, or the whole trajectory only."""
        ends = [len(t.steps)] if final_only else range(1, len(t.steps) + 1)
        return [(problem.prompt, "".join(t.steps[:k])) for k in ends if k > 0]

    def _missing(self, problem: Problem, trajectories: Sequence[Trajectory], final_only: bool = False
                 ) -> list[tuple[str, str]]:
        keys, seen = [], set()
        for t in trajectories:
            for key in self._judged(problem, t, final_only):
                if key not in self._cache and key not in seen:
                    seen.add(key)
                    keys.append(key)
        return keys

    def estimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        if self.generator is None:
            return 0
        return sum(self.generator.count_tokens(self._prompt(problem, prefix)) + 1
                   for _, prefix in self._missing(problem, trajectories))

    async def aestimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory],
                               final_only: bool = False) -> int:
        if self.generator is None:
            return 0

        async def one(prefix: str) -> int:
            return await self.generator.acount_tokens(await self._aprompt(problem, prefix)) + 1

        missing = self._missing(problem, trajectories, final_only)
        return sum(await asyncio.gather(*(one(prefix) for _, prefix in missing)))

    async def aestimate_final_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        return await self.aestimate_tokens(problem, trajectories, final_only=True)

    def p_yes(self, top: dict[str, float]) -> float:
        yes = sum(math.exp(lp) for tok, lp in top.items() if tok.strip().lower() in self._yes)
        no = sum(math.exp(lp) for tok, lp in top.items() if tok.strip().lower() in self._no)
        return yes / (yes + no) if yes + no > 0 else 0.5  # neither said: no information

    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        return await self._score(problem, trajectories, final_only=False)

    async def score_final(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        """Only each whole trajectory is judged (one request each), not every step prefix."""
        return await self._score(problem, trajectories, final_only=True)

    async def _score(self, problem: Problem, trajectories: Sequence[Trajectory], final_only: bool) -> ScoreResult:
        if self.generator is None:
            raise VerifierError("self_eval needs the policy generator; use it through an Engine")
        missing = self._missing(problem, trajectories, final_only)
        params = _ONE_GREEDY_TOKEN.params(1, logprobs=self.config.top_logprobs)
        prompts = await asyncio.gather(*(self._aprompt(problem, prefix) for _, prefix in missing))
        results = await self.generator.generate([GenerationRequest(p, params) for p in prompts])
        tokens = 0
        for key, result in zip(missing, results):
            tokens += result.prompt_tokens + sum(c.num_tokens for c in result.completions)
            top = (result.completions[0].top_logprobs or [{}])[0] if result.completions else {}
            self._cache[key] = self.p_yes(top)
        scores = []
        for t in trajectories:
            row = []
            for key in self._judged(problem, t, final_only):
                row.append(self._cache[key])
                self._cache.move_to_end(key)  # least recently used goes first
            scores.append(row)
        while len(self._cache) > _CACHE_SIZE:  # evicted only after this call has read its scores
            self._cache.popitem(last=False)
        return ScoreResult(scores, tokens, requests=len(missing))
