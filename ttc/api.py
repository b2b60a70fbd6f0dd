"""`ttc.solve` / `ttc.asolve`: the one-call API.

Without `engine=`, a default Engine (the embedded model through in-process
vLLM) is created on first use and reused for the life of the process, so the
model loads once. Pass your own Engine to choose the backend and model.
"""
from __future__ import annotations

import atexit
import threading
from typing import Any

from ttc.core.budget import Budget
from ttc.engine import Engine
from ttc.engine_config import DEFAULT_STRATEGY
from ttc.core.types import Problem, Solution

_default: Engine | None = None
_default_lock = threading.Lock()


def default_engine() -> Engine:
    global _default
    with _default_lock:
        if _default is None:
            _default = Engine()
            atexit.register(_default.close)
        return _default


def solve(prompt: str | Problem, budget: Budget | int | dict, strategy: str = DEFAULT_STRATEGY,
          engine: Engine | None = None, **options: Any) -> Solution:
    """Spend `budget` (an int = generated tokens) on `prompt` with `strategy`; options go to the strategy."""
    return (engine or default_engine()).solve(prompt, budget, strategy, **options)


async def asolve(prompt: str | Problem, budget: Budget | int | dict, strategy: str = DEFAULT_STRATEGY,
                 engine: Engine | None = None, **options: Any) -> Solution:
    return await (engine or default_engine()).asolve(prompt, budget, strategy, **options)
