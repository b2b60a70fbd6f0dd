"""A deterministic fake of the Generator interface (the `fake` backend).

Part of the public surface (re-exported by `ttc.testing`): ttc's own unit tests
and plugin authors use it to test strategies without a model. They honour the request contract exactly —
n, max_tokens (one token = one whitespace-separated word), stop strings,
logprobs, prompt and cached-prompt token counts — so budget tests on the fakes
mean what they would mean on vLLM.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
from typing import Callable, Mapping, Sequence

from pydantic import Field

from ttc.core.config import StrictModel
from ttc.core.errors import BackendError
from ttc.core.plugins import Generator
from ttc.core.types import Completion, GenerationRequest, GenerationResult, Problem

# One fake token = one word and the whitespace after it, so texts re-join exactly.
_TOKEN = re.compile(r"\s*\S+\s*|\s+")
TextScript = Callable[[str, random.Random], str]


def seeded_rng(*parts: object) -> random.Random:
    """A Random seeded from a hash of `parts`, the same in every process (unlike `hash()`)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def answer_script(answers: Mapping[str, float], steps: int = 3, words_per_step: int = 6) -> TextScript:
    """A script whose samples reason for `steps` steps, then box an answer drawn with the given weights.

    It is step-aware: a continuation request (the prompt already holds k steps after the
    "[assistant]" marker of `FakeGenerator.render_prompt`) gets the remaining steps only, so
    step-level searches grow trajectories exactly as they would on a real model.
    """
    values, weights = list(answers), list(answers.values())

    def script(prompt: str, rng: random.Random) -> str:
        so_far = prompt.rpartition("[assistant]\n")[2].count("\n\n")
        body = "".join(
            " ".join(f"w{rng.randrange(1000)}" for _ in range(words_per_step)) + "\n\n"
            for _ in range(max(0, steps - so_far))
        )
        return body + f"The answer is \\boxed{{{rng.choices(values, weights)[0]}}}"

    return script


def thinking_script(answers_by_episode: Sequence[Mapping[str, float]], *, words_per_episode: int = 8,
                    marker: str = "Wait") -> TextScript:
    """A script of a thinking model whose chance of a right answer is known after every episode.

    It thinks in `len(answers_by_episode) - 1` episodes (each after the first opens a paragraph with
    `marker`), then boxes an answer. Asked to answer early (its output so far ends in a paragraph with
    "Final Answer:", as budget forcing and MRT's termination text do), it answers with the weights of
    `answers_by_episode[k]`, k being the episodes begun so far; so J after k episodes is known exactly.
    It is prefix-aware: a continuation gets only the episodes not yet thought, and thinking forced on
    past its last episode (a continuation word appended) adds one more episode each time.
    """
    last = len(answers_by_episode) - 1

    def begun(thought: str) -> int:
        return thought.count("\n\n" + marker) + (1 if thought.strip() else 0)

    def draw(k: int, rng: random.Random) -> str:
        weights = answers_by_episode[min(k, last)]
        return rng.choices(list(weights), list(weights.values()))[0]

    def words(rng: random.Random) -> str:
        return " ".join(f"t{rng.randrange(1000)}" for _ in range(words_per_episode))

    def script(prompt: str, rng: random.Random) -> str:
        tail = prompt.rpartition("[assistant]\n")[2]
        if "Final Answer:" in tail:
            cut = min(i for i in (tail.find("\n\nTime is up"), tail.find("\n\nFinal Answer:"), len(tail)) if i >= 0)
            return f" {draw(begun(tail[:cut]), rng)}"
        k = begun(tail)
        text = ""
        if k == 0:
            text, k = words(rng), 1
        elif tail.rstrip().endswith(marker):  # a continuation word was appended: that episode goes on
            text = ", " + words(rng)
        for _ in range(k, last):
            text += f"\n\n{marker}, " + words(rng)
            k += 1
        return text + f"\n\nThe answer is \\boxed{{{draw(k, rng)}}}"

    return script


class FakeGeneratorConfig(StrictModel):
    """Options of the fake backend when it is chosen by name (backend='fake')."""

    model: str | None = Field(None, description="Ignored; accepted so engine configs can name a model.")
    answers: dict[str, float] = Field(default_factory=lambda: {"42": 0.6, "41": 0.3, "7": 0.1},
                                      description="Answer -> sampling weight.")
    seed: int = Field(0, description="Seed of the scripted randomness.")
    latency_s: float = Field(0.0, ge=0.0, description="Simulated seconds per generate call.")
    fail_on_call: int | None = Field(None, ge=1, description="The generate call (1-based) that raises BackendError.")
    fail_on_prompt: str | None = Field(
        None, description="Every generate call holding a request whose prompt contains this text raises a "
                          "BackendError that is not retryable (for tests of a failed batch and its siblings).")
    fail_after_s: float = Field(
        0.0, ge=0.0, description="Seconds a failing call (fail_on_call, fail_on_prompt) runs before it raises, so "
                                 "it fails while its siblings are still running.")
    exit_on_call: int | None = Field(
        None, ge=1, description="The generate call (1-based) on which the whole process exits, as if killed "
                                "(for fault tests on a cluster: run it only inside a replica).")
    exit_token: str | None = Field(
        None, description="With exit_on_call: a file path; only the process that creates it exits, so exactly "
                          "one replica of a pool dies.")
    fail_start_token: str | None = Field(
        None, description="A file path: the one process that creates it fails in start(), so exactly one "
                          "replica of a pool fails to come up (for start-failure tests).")


class FakeGenerator(Generator):
    """Scripted generator: same seed and requests, same completions.

    `script(prompt, rng)` returns the full text a sample would produce; the fake
    then cuts it at the first stop string or at max_tokens words. A request's
    randomness depends on (seed, prompt, how many times this prompt was asked,
    sample index), so repeating a prompt gives fresh but reproducible samples.
    """

    model_name = "fake"
    Config = FakeGeneratorConfig

    @classmethod
    def from_config(cls, config: FakeGeneratorConfig) -> "FakeGenerator":
        """The fake chosen by name (backend='fake'): an answer script plus its fault-injection options."""
        fake = cls(answer_script(config.answers), seed=config.seed, latency_s=config.latency_s,
                   fail_on_call=config.fail_on_call, fail_on_prompt=config.fail_on_prompt,
                   fail_after_s=config.fail_after_s)
        fake.exit_on_call, fake.exit_token = config.exit_on_call, config.exit_token
        fake.fail_start_token = config.fail_start_token
        return fake

    def start(self) -> None:
        """Nothing to load; fails once, in the one process that claims `fail_start_token`, if set."""
        if self.fail_start_token is not None and _claim(self.fail_start_token):
            raise BackendError("fake backend failed to start (fail_start_token)", retryable=False)

    def __init__(self, script: TextScript | None = None, *, seed: int = 0, num_parameters: int | None = 1_000_000,
                 latency_s: float = 0.0, fail_on_call: int | None = None, dies: bool = False,
                 fail_on_prompt: str | None = None, fail_after_s: float = 0.0):
        self.script = script or answer_script({"42": 0.6, "41": 0.3, "7": 0.1})
        self.seed = seed
        self.num_parameters = num_parameters
        self.latency_s = latency_s
        self.fail_on_call = fail_on_call  # 1-based generate() call that raises BackendError
        self.dies = dies  # after failing, every later call fails too (a dead engine)
        self.fail_on_prompt = fail_on_prompt  # see FakeGeneratorConfig.fail_on_prompt
        self.fail_after_s = fail_after_s  # see FakeGeneratorConfig.fail_after_s
        self.calls: list[list[GenerationRequest]] = []
        #: Generate calls cancelled while they ran (a failed sibling, a time cap), so tests can see it.
        self.cancelled = 0
        self.exit_on_call: int | None = None  # see FakeGeneratorConfig.exit_on_call
        self.exit_token: str | None = None
        self.fail_start_token: str | None = None  # see FakeGeneratorConfig.fail_start_token
        self._asked: dict[str, int] = {}
        self._seen_prompts: list[list[str]] = []

    def count_tokens(self, text: str) -> int:
        """One token per whitespace-separated word, the fake's token unit."""
        return len(text.split())

    def render_prompt(self, problem: Problem) -> str:
        """A plain-text chat layout whose "[assistant]" marker lets step-aware scripts find the steps."""
        return (f"[system] {problem.system}\n" if problem.system else "") + f"[user] {problem.prompt}\n[assistant]\n"

    def _cached_tokens(self, words: list[str]) -> int:
        best = 0
        for seen in self._seen_prompts:
            k = 0
            for a, b in zip(seen, words):
                if a != b:
                    break
                k += 1
            best = max(best, k)
        self._seen_prompts.append(words)
        return best

    def _complete(self, req: GenerationRequest) -> GenerationResult:
        p = req.params
        asked = self._asked.get(req.prompt, 0)
        self._asked[req.prompt] = asked + 1
        completions = []
        for i in range(p.n):
            rng = seeded_rng(self.seed, p.seed, req.prompt, asked, i)
            text = self.script(req.prompt, rng)
            reason, stop = "stop", None
            cut = min((text.find(s) for s in p.stop if s and s in text), default=-1)
            if cut >= 0:
                stop = next(s for s in p.stop if s and text.find(s) == cut)
                text = text[: cut + len(stop)]  # the stop string stays in the text, as with every backend
            tokens = _TOKEN.findall(text)
            if len(tokens) > p.max_tokens:
                tokens, reason, stop = tokens[: p.max_tokens], "length", None
                text = "".join(tokens)
            n_tokens = len(tokens)
            logprobs = [-rng.random() for _ in range(n_tokens)] if p.logprobs is not None else None
            top = None
            if p.logprobs:  # alternatives: the chosen word first, then made-up ones
                top = [{t.strip(): lp, **{f"alt{j}": lp - 1 - j for j in range(p.logprobs - 1)}}
                       for t, lp in zip(tokens, logprobs)]
            completions.append(Completion(text, n_tokens, reason, logprobs, stop, top))
        words = req.prompt.split()
        # Like vLLM: every sequence processes the prompt, and the cache count is the first sequence's.
        return GenerationResult(completions, p.n * len(words), p.n * self._cached_tokens(words))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Scripted completions honouring n, stop, max_tokens and logprobs; records each call in `calls`,
        and counts in `cancelled` the calls cancelled while they ran."""
        self.calls.append(list(requests))
        call = len(self.calls)
        if call == self.exit_on_call and _claim(self.exit_token):
            os._exit(17)  # no clean-up, no exception: what a killed replica looks like to its pool
        failure = None
        if self.fail_on_call is not None and (call == self.fail_on_call or (self.dies and call > self.fail_on_call)):
            failure = BackendError(f"fake backend failed on generate call {call}", retryable=not self.dies)
        elif self.fail_on_prompt is not None and any(self.fail_on_prompt in r.prompt for r in requests):
            failure = BackendError(f"fake backend failed on a prompt holding {self.fail_on_prompt!r}",
                                   retryable=False)
        try:
            if failure is not None:
                if self.dies and call >= (self.fail_on_call or 0):
                    self.dead = True  # a dead engine says so, as real backends do
                if self.fail_after_s:
                    await asyncio.sleep(self.fail_after_s)
                raise failure
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return [self._complete(r) for r in requests]


def _claim(token: str | None) -> bool:
    """True for the one process that creates `token` (always True without a token)."""
    if token is None:
        return True
    try:
        os.close(os.open(token, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False
