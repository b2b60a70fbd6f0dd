"""The code sandbox: run a candidate program against HumanEval-format tests and judge it.

The verdict is decided here, outside the candidate's reach, from the tests' own asserts run
by the judge on values the candidate returned — never from its exit status or its output.
"""
from __future__ import annotations

import asyncio
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Sequence

from ttc.core.config import validate
from workers.sandbox.config import SandboxConfig
from workers.sandbox.isolation import Isolation, detect
from workers.sandbox.process import CallFailed, CandidateProcess
from workers.sandbox.tests_program import RECORD, TestsProgram, TestTally, compile_tests

STATUSES = ("passed", "failed", "timeout", "memory", "error")


@dataclass(frozen=True)
class CodeJob:
    """One program to judge: its source, the tested function, the tests, and trusted helper code.

    `prelude` is problem code the tests rely on (HumanEval's prompt defines helpers some
    checks call); it runs with the tests, outside the sandbox."""

    solution: str
    entry_point: str
    tests: str
    prelude: str = ""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    status: str  # one of STATUSES
    tests_passed: int
    tests_total: int
    output: str
    output_truncated: bool
    message: str
    seconds: float
    isolation: str

    @property
    def pass_rate(self) -> float:
        return self.tests_passed / self.tests_total if self.tests_total else float(self.passed)

    def to_dict(self) -> dict:
        return asdict(self)


class Sandbox:
    """Judges code jobs, up to `concurrency` at once, each in its own isolated process."""

    def __init__(self, config: SandboxConfig | dict | None = None):
        self.config = config if isinstance(config, SandboxConfig) else validate(SandboxConfig, config or {}, "sandbox")
        self.isolation: Isolation = detect(self.config.isolation, self.config.python)
        self.concurrency = self.config.concurrency or os.cpu_count() or 1
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.concurrency):
            self._slots.put(slot)
        self._compiled: dict[str, TestsProgram] = {}

    # -------------------------------------------------------------- one job
    def check(self, job: CodeJob) -> Verdict:
        tests = self._compiled.get(job.tests)
        if tests is None:
            tests = self._compiled[job.tests] = compile_tests(job.tests)
        slot = self._slots.get()
        try:
            return self._judge(job, tests, slot)
        finally:
            self._slots.put(slot)

    def _judge(self, job: CodeJob, tests: TestsProgram, slot: int) -> Verdict:
        started = time.monotonic()
        tally = TestTally(tests.total)
        loaded = completed = False
        message = ""
        process = CandidateProcess(self.config, self.isolation, slot)
        try:
            process.load(job.solution, job.entry_point)
            loaded = True
            namespace = {"__name__": "__ttc_tests__", RECORD: tally.record}
            if job.prelude:
                exec(compile(job.prelude, "prelude.py", "exec"), namespace)  # noqa: S102 - trusted problem code
            candidate = _proxy(process, job.entry_point)
            # Some tests call the function by its own name (HumanEval/33): that name is the candidate too.
            namespace[job.entry_point] = candidate
            exec(tests.code, namespace)  # noqa: S102 - trusted tests; the candidate is only reached through `call`
            namespace[tests.entry](candidate)
            completed = True
        except CallFailed as exc:
            message = str(exc)
        except Exception as exc:  # noqa: BLE001 - an error outside any assert ends the tests: a failure
            message = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            process.close()
        output, truncated = process.output()
        if process.timed_out:
            status = "timeout"
        elif process.memory:
            status = "memory"
        elif not loaded:
            status = "error"  # it could not even be loaded: syntax error, exit or crash at import, no entry point
        elif completed and not tally.failed:
            status = "passed"
        else:
            status = "failed"
        passed_count = tally.passed_count(completed) if loaded else 0
        if not message and tally.failed:
            message = next(iter(tally.failed.values()))
        return Verdict(passed=status == "passed", status=status, tests_passed=passed_count,
                       tests_total=tests.total, output=output, output_truncated=truncated, message=message,
                       seconds=round(time.monotonic() - started, 4), isolation=self.isolation.mode)

    # -------------------------------------------------------------- many jobs
    def check_many(self, jobs: Sequence[CodeJob]) -> list[Verdict]:
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)), thread_name_prefix="ttc-sandbox") as pool:
            return list(pool.map(self.check, jobs))

    async def acheck_many(self, jobs: Sequence[CodeJob]) -> list[Verdict]:
        return await asyncio.to_thread(self.check_many, list(jobs))


def _proxy(process: CandidateProcess, name: str):
    def candidate(*args, **kwargs):
        return process.call(args, kwargs)

    candidate.__name__ = name
    return candidate
