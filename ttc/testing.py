"""Deterministic fakes of the Generator and Scorer interfaces, for tests of strategies and plugins.

They honour the request contract exactly (n, max_tokens with one token = one
whitespace-separated word, stop strings, logprobs, prompt and cached-prompt token
counts), so budget tests on the fakes mean what they would mean on vLLM. They live
with the other plugins (`workers/fake.py`, `verifiers/fake.py`); this module is
their public address.
"""
from __future__ import annotations

from verifiers.fake import FakeScorer, FakeScorerConfig
from workers.fake import FakeGenerator, FakeGeneratorConfig, TextScript, answer_script, seeded_rng, thinking_script

__all__ = ["FakeGenerator", "FakeGeneratorConfig", "FakeScorer", "FakeScorerConfig", "TextScript", "answer_script",
           "seeded_rng", "thinking_script"]
