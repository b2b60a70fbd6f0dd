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
    "EngineConfig": "ttc.config",
    "Budget": "ttc.budget",
    "Ledger": "ttc.budget",
    "Problem": "ttc.types",
    "Solution": "ttc.types",
    "Trajectory": "ttc.types",
    "Usage": "ttc.types",
    "SamplingParams": "ttc.types",
    "TTCError": "ttc.errors",
    "ConfigError": "ttc.errors",
    "BudgetError": "ttc.errors",
    "BackendError": "ttc.errors",
    "VerifierError": "ttc.errors",
    "SolveError": "ttc.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ttc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
