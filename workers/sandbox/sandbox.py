"""The code sandbox: run a candidate program against HumanEval-format tests and judge it.

The verdict is decided here, outside the candidate's reach, from the tests' own asserts run
by the judge on values the candidate returned — never from its exit status or its output.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Sequence

from ttc.core.config import validate
from ttc.core.errors import VerifierError
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


class _Slots:
    """The slot users of this process: every Sandbox in it draws from one pool, so two of them (the
    engine's judge and the code_exec scorer) never run candidates as the same user at once — the kill
    of one slot's leftovers, and its process count, stay its own."""

    SIZE = 256  # the uid block of one process (see process.uid_base)

    def __init__(self):
        self._free = list(range(self.SIZE))
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            if not self._free:
                raise VerifierError(f"code sandbox: all {self.SIZE} slot users of this process are busy")
            return self._free.pop(0)

    def give(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)
            self._free.sort()


SLOTS = _Slots()


class Sandbox:
    """Judges code jobs, up to `concurrency` at once, each in its own isolated process."""

    def __init__(self, config: SandboxConfig | dict | None = None):
        self.config = config if isinstance(config, SandboxConfig) else validate(SandboxConfig, config or {}, "sandbox")
        self.isolation: Isolation = detect(self.config.isolation, self.config.python)
        self.concurrency = min(self.config.concurrency or os.cpu_count() or 1, _Slots.SIZE)
        self._running = threading.Semaphore(self.concurrency)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="ttc-sandbox")
        self._compiled: dict[str, TestsProgram] = {}

    # -------------------------------------------------------------- one job
    def check(self, job: CodeJob) -> Verdict:
        tests = self._compiled.get(job.tests)
        if tests is None:
            tests = self._compiled[job.tests] = compile_tests(job.tests)
        with self._running:
            slot = SLOTS.take()
            try:
                return self._judge(job, tests, slot)
            finally:
                SLOTS.give(slot)

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
        if process.memory:  # before timeout: a candidate that hit its memory limit may then run out of time
            status = "memory"
        elif process.timed_out:
            status = "timeout"
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
        return list(self._pool.map(self.check, jobs))

    async def acheck_many(self, jobs: Sequence[CodeJob]) -> list[Verdict]:
        """On the sandbox's own threads: a batch never holds the event loop's default executor,
        which answer checks and other offloaded work of every problem share."""
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(self._pool, self.check, job) for job in jobs)))


def _proxy(process: CandidateProcess, name: str):
    def candidate(*args, **kwargs):
        return process.call(args, kwargs)

    candidate.__name__ = name
    return candidate
