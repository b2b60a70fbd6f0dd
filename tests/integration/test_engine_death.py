"""A vLLM engine process killed mid-request: the solve fails cleanly and the Engine recovers."""
import os
import signal
import threading
import time

import psutil
import pytest

from ttc.engine import Engine
from ttc.core.errors import SolveError

pytestmark = pytest.mark.integration


def _engine_core_processes():
    me = psutil.Process()
    return [p for p in me.children(recursive=True) if "EngineCore" in " ".join(p.cmdline() or [p.name()])]


def test_killed_engine_core_fails_the_solve_and_the_next_solve_gets_a_fresh_engine():
    # Engine cores of other engines in this session (the shared real-model engine) are not this test's to kill.
    others = {p.pid for p in _engine_core_processes()}
    with Engine(backend="vllm", backend_options={"cpu_kv_cache_gb": 1}) as engine:
        engine.start()
        before = {p.pid for p in _engine_core_processes()} - others
        assert before, "no EngineCore child process found"
        outcome = {}

        def solve():
            try:
                outcome["solution"] = engine.solve("Count from 1 to 1000.", 32 * 1000, "repeated_sampling",
                                                   n=32, max_tokens=1000)
            except SolveError as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=solve)
        worker.start()
        # Kill only once the request is inside vLLM, so the kill lands mid-request.
        processor = engine._generator._engine.output_processor
        deadline = time.monotonic() + 60
        while processor.get_num_unfinished_requests() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert processor.get_num_unfinished_requests() > 0
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        worker.join(timeout=120)
        assert "error" in outcome, "the solve must fail when its engine dies"
        assert "vLLM engine died" in str(outcome["error"])
        sol = engine.solve("What is 2 + 2?", 128, "best_of_n", max_tokens=64)
        assert len(sol.candidates) == 2
        assert not before & {p.pid for p in _engine_core_processes()}
