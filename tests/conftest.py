"""Shared fixtures. The real-model engine is built once per test session (it takes ~40 s to start)."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def real_engine():
    """One Engine on the embedded model through in-process vLLM, shared by all integration tests."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from ttc.engine import Engine

    engine = Engine(backend="vllm", verifier="mean_logprob").start()
    yield engine
    engine.close()
