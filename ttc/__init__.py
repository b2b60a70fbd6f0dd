"""ttc: test-time compute orchestration.

`import ttc` stays fast and needs no vLLM, torch or Ray: the public names below
are imported on first use.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "solve": "ttc.api",
    "asolve": "ttc.api",
    "Engine": "ttc.engine",
    "EngineConfig": "ttc.engine_config",
    "Budget": "ttc.core.budget",
    "Ledger": "ttc.core.budget",
    "Problem": "ttc.core.types",
    "Solution": "ttc.core.types",
    "Trajectory": "ttc.core.types",
    "Usage": "ttc.core.types",
    "SamplingParams": "ttc.core.types",
    "TTCError": "ttc.core.errors",
    "ConfigError": "ttc.core.errors",
    "BudgetError": "ttc.core.errors",
    "BackendError": "ttc.core.errors",
    "VerifierError": "ttc.core.errors",
    "SolveError": "ttc.core.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ttc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
