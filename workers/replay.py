"""A Generator that serves recorded samples again, in a given order (the `replay` backend of calibration).

Calibration already holds many samples of each of its prompts (results.jsonl keeps
each sample's answer, tokens, finish reason and verifier score). To judge a
strategy such as `auto` on them, the real strategy runs over this generator: the
samples come back in the order given, charged as recorded, so what the strategy
decides and spends is what it would have decided and spent had the backend drawn
those samples. Only whole samples are replayed (a step-level search's
continuations were never recorded).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ttc.core.plugins import Generator
from ttc.core.types import Completion, FinishReason, GenerationRequest, GenerationResult


@dataclass(frozen=True)
class ReplaySample:
    """One recorded sample: its answer (None when it gave none), its generated tokens, why it ended,
    and its verifier score and verifier tokens when it was scored."""

    answer: str | None
    num_tokens: int
    finish_reason: FinishReason = "stop"
    score: float | None = None
    verifier_tokens: int = 0


def _tag(i: int) -> str:
    """A unique label without digits (answer extraction falls back to the last number of a text)."""
    letters = ""
    while True:
        i, r = divmod(i, 26)
        letters = chr(ord("a") + r) + letters
        if i == 0:
            return f"replayed sample {letters}"
        i -= 1


class ReplayGenerator(Generator):
    """Serves one problem's recorded samples, in order, whatever the prompt asked.

    Each request with n=k gets the next k samples (a batch of requests is served in its
    order); calibration gives the probe's samples first, then a configuration's in a
    random order. Charges are the recorded ones: each sample's `num_tokens`, and
    `prompt_tokens` (and `cached_prompt_tokens`) per sample, as the recorded run paid them.

    A request for more than is left gets what is left, and once nothing is left a result
    with no completions and no charge (no backend would have been called): a strategy
    stops there as when its budget is spent. A request whose `max_tokens` is below a
    sample's recorded length gets it cut there, finish reason "length" and no answer (a
    truncated sample has not reached its answer); stop strings and logprobs are not replayed.

    A completion's text is a unique tag line followed by `\\boxed{answer}` (the tag alone
    when the sample had no answer), so the search context extracts the recorded answer and
    `verifiers.replay.ReplayScorer` finds the recorded score by text (`sample_of`).
    """

    model_name = "replay"
    num_parameters = None

    def __init__(self, samples: Sequence[ReplaySample], *, prompt_tokens: int = 0, cached_prompt_tokens: int = 0):
        self.samples = list(samples)
        self.prompt_tokens = prompt_tokens
        self.cached_prompt_tokens = cached_prompt_tokens
        self.served = 0  # how many samples have been served so far
        self._by_text: dict[str, ReplaySample] = {}

    @property
    def left(self) -> int:
        """Samples not served yet."""
        return len(self.samples) - self.served

    def sample_of(self, text: str) -> ReplaySample | None:
        """The recorded sample a served completion's text stands for (None for any other text)."""
        return self._by_text.get(text)

    def _completion(self, sample: ReplaySample, max_tokens: int) -> Completion:
        tag = _tag(self.served)
        self.served += 1
        if sample.num_tokens > max_tokens:  # cut before its end: no answer, no score
            sample = ReplaySample(None, max_tokens, "length")
        text = tag if sample.answer is None else f"{tag}\n\n\\boxed{{{sample.answer}}}"
        self._by_text[text] = sample
        return Completion(text, sample.num_tokens, sample.finish_reason)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """The next recorded samples, n per request in order, charged as recorded; empty once exhausted."""
        results = []
        for req in requests:
            k = min(req.params.n, self.left)
            due = self.samples[self.served:self.served + k]
            completions = [self._completion(s, req.params.max_tokens) for s in due]
            results.append(GenerationResult(completions, len(completions) * self.prompt_tokens,
                                            len(completions) * self.cached_prompt_tokens))
        return results
