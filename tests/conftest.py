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


@pytest.fixture
def answer_42_dataset(tmp_path):
    """A JSONL dataset of three problems whose answer is 42 (the label commands need references)."""
    import json

    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Q{i}?", "answer": "42"}) + "\n" for i in range(3)))
    return data
