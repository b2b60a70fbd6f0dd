"""Execution as a verifier: a candidate program's score is the share of the public tests it passes.

Runs each candidate in the code sandbox (`workers/sandbox`) against the problem's *public*
tests (`metadata["public_tests"]`, HumanEval `check(candidate)` format), or, for a problem
without any, 1 when the program loads and defines the function and 0 when not. Hidden tests
(`metadata["test"]`) are never read here: they only judge correctness, after the search.
A candidate with no program scores 0. Costs no model tokens; its price is CPU time.
"""
from __future__ import annotations

import asyncio
from typing import Sequence

from pydantic import Field

from ttc.core.code import is_code_problem
from ttc.core.config import StrictModel
from ttc.core.errors import VerifierError
from ttc.core.plugins import Scorer, ScoreResult
from ttc.core.types import Problem, Trajectory
from workers.sandbox import CodeJob, Sandbox, SandboxConfig


LOADS_ONLY = "def check(candidate):\n    pass\n"


class CodeExecConfig(StrictModel):
    """The sandbox the public tests run in."""

    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="limits and isolation of each run")


class CodeExecScorer(Scorer):
    name = "code_exec"
    Config = CodeExecConfig

    def __init__(self, config: CodeExecConfig | None = None):
        super().__init__(config)
        self._sandbox: Sandbox | None = None

    async def _get_sandbox(self) -> Sandbox:
        if self._sandbox is None:  # built on first use, off the event loop: it makes one trial run
            self._sandbox = await asyncio.to_thread(Sandbox, self.config.sandbox)
        return self._sandbox

    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        if not is_code_problem(problem):
            raise VerifierError("code_exec scores code problems (metadata entry_point), and this problem is not one")
        # Without public tests, all execution can tell is whether the program loads and defines the function.
        tests = problem.metadata.get("public_tests") or LOADS_ONLY
        entry = problem.metadata["entry_point"]
        programs = sorted({t.answer for t in trajectories if t.answer})  # each distinct program runs once
        prelude = problem.metadata.get("code_prompt", "")  # helpers the tests may call
        sandbox = await self._get_sandbox()
        verdicts = await sandbox.acheck_many([CodeJob(p, entry, tests, prelude) for p in programs])
        rate = {p: v.pass_rate for p, v in zip(programs, verdicts)}
        rates = [rate[t.answer] if t.answer else 0.0 for t in trajectories]
        return ScoreResult([[r] * max(1, len(t.steps)) for r, t in zip(rates, trajectories)], 0)
