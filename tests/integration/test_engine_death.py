"""A vLLM engine process killed mid-request: the solve fails cleanly and the Engine recovers."""
import os
import signal
import threading
import time

import psutil
import pytest

from ttc.engine import Engine
from ttc.errors import SolveError

pytestmark = pytest.mark.integration


def _engine_core_processes():
    me = psutil.Process()
    return [p for p in me.children(recursive=True) if "EngineCore" in " ".join(p.cmdline() or [p.name()])]


def test_killed_engine_core_fails_the_solve_and_the_next_solve_gets_a_fresh_engine():
    with Engine(backend="vllm", backend_options={"cpu_kv_cache_gb": 1}) as engine:
        engine.start()
        before = {p.pid for p in _engine_core_processes()}
        assert before, "no EngineCore child process found"

        def kill_soon():
            time.sleep(3)
            for pid in before:
                os.kill(pid, signal.SIGKILL)

        threading.Thread(target=kill_soon, daemon=True).start()
        with pytest.raises(SolveError, match="vLLM engine died"):
            engine.solve("Count from 1 to 1000.", 8 * 1000, "repeated_sampling", n=8, max_tokens=1000)
        sol = engine.solve("What is 2 + 2?", 128, "best_of_n", max_tokens=64)
        assert len(sol.candidates) == 2
        assert not before & {p.pid for p in _engine_core_processes()}
