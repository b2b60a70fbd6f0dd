"""Budget forcing (s1, Muennighoff et al.): think at least so long, at most so long, always answer.

A sample thinks in rounds. When the model ends its thinking (its end-of-thinking text, or EOS for a
model without one) before `min_thinking_tokens`, the end is removed and the next continuation word
("Wait", "But wait", ...) is appended, so it thinks on. At `max_thinking_tokens` thinking is closed
and the answer is forced ("Final Answer:"), so every sample ends with an answer. The answer's tokens
are set aside before thinking is sized, so under a token budget the forced answer always fits and
nothing is overspent; all samples of a problem go to the backend together in each round.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from pydantic import Field, field_validator, model_validator

from ttc.core.answers import answers_match, extract_answer, states_answer
from ttc.core.config import SamplingOptions, nonblank_items
from ttc.core.context import SearchContext
from ttc.core.errors import ConfigError
from ttc.core.episodes import ThinkingFormat
from ttc.core.types import Completion, GenerationRequest, Trajectory

#: s1's word to think on, then others in rotation so a model that ends again does not loop on one.
CONTINUATION_WORDS = ("Wait", "But wait", "Alternatively", "Hmm")


class ForcingOptions(ThinkingFormat):
    """Budget forcing: a minimum and a maximum thinking length, and how the answer is forced."""

    min_thinking_tokens: int = Field(0, ge=0, le=1 << 20, description="Thinking shorter than this is not allowed to "
                                     "end: its end is removed and a continuation word appended.")
    max_thinking_tokens: int | None = Field(
        None, ge=1, le=1 << 20, description="At this many thinking tokens the thinking is closed and the answer "
        "forced; None: what the strategy's max_tokens leaves after answer_tokens.")
    continuation_words: list[str] = Field(list(CONTINUATION_WORDS), min_length=1,
                                          description="Appended in rotation when thinking ended too early.")
    answer_prompt: str = Field("\n\nFinal Answer:", min_length=1,
                               description="Appended (after think_end, if any) to force the answer.")
    answer_tokens: int = Field(32, ge=1, le=8192, description="Most tokens of the answer after the thinking.")
    max_extensions: int = Field(8, ge=0, le=1024, description="Most continuation words appended to one sample (a "
                                "model that ends at once every time must not loop forever).")

    @field_validator("continuation_words")
    @classmethod
    def _words(cls, words: list[str]) -> list[str]:
        return nonblank_items(words, "continuation_words", "continuation word")

    def next_word(self, extensions: int) -> str:
        """The word a sample's next extension appends: s1's "Wait" first, then the others in rotation."""
        return self.continuation_words[extensions % len(self.continuation_words)]

    @model_validator(mode="after")
    def _lengths(self) -> "ForcingOptions":
        if self.max_thinking_tokens is not None and self.min_thinking_tokens > self.max_thinking_tokens:
            raise ValueError(f"min_thinking_tokens={self.min_thinking_tokens} exceeds "
                             f"max_thinking_tokens={self.max_thinking_tokens}")
        return self

    def within(self, max_tokens: int, *, explicit: bool, name: str = "budget_forcing",
               source: str = "max_tokens") -> "ForcingOptions":
        """These options with the thinking cap resolved against a sample's `max_tokens` (thinking and answer):
        None takes what max_tokens leaves after the answer; a cap given with an `explicit` max_tokens must
        fit in it. `name` is where these options sit and `source` what gave max_tokens, for the message
        of the ConfigError (a ValueError, so a validator reports it with its field)."""
        cap = self.max_thinking_tokens
        if cap is None:
            cap = max_tokens - self.answer_tokens
            if cap < 1:
                raise ConfigError(f"{source}={max_tokens} leaves no thinking after {name}.answer_tokens="
                                  f"{self.answer_tokens}")
        elif explicit and cap + self.answer_tokens > max_tokens:
            raise ConfigError(f"{name}.max_thinking_tokens={cap} + answer_tokens={self.answer_tokens} exceed "
                              f"{source}={max_tokens}, the most a sample generates")
        if self.min_thinking_tokens > cap:
            how = "its max_thinking_tokens" if self.max_thinking_tokens is not None else \
                f"{source} - answer_tokens"
            raise ConfigError(f"{name}.min_thinking_tokens={self.min_thinking_tokens} exceeds the thinking cap "
                              f"{cap} ({how})")
        return self.model_copy(update={"max_thinking_tokens": cap})

    def sample_tokens(self) -> int:
        """Most generated tokens of one forced sample (the cap resolved): its thinking and its answer."""
        return (self.max_thinking_tokens or 0) + self.answer_tokens


@dataclass
class ForcedSample:
    """One sample under budget forcing, as it grew."""

    text: str = ""  # everything after the prompt: thinking, appended words, the answer
    thinking_tokens: int = 0
    answer_tokens: int = 0
    logprobs: list[float] = field(default_factory=list)
    extensions: int = 0
    ended: bool = False  # the model ended its thinking itself (and was allowed to)
    capped: bool = False  # thinking was closed by the cap or the budget
    answered: bool = False
    answer_start: int | None = None  # where the answer section begins in `text`, once there is one
    thinking_end: int | None = None  # where the thinking ends in `text` (before think_end), once it has
    trajectory: Trajectory | None = None

    @property
    def thinking(self) -> str:
        return self.text[:self.thinking_end] if self.thinking_end is not None else self.text


def _strip_end(text: str, stop: str | None) -> str:
    return text[: -len(stop)] if stop and text.endswith(stop) else text


async def force_thinking(ctx: SearchContext, n: int, sampling: SamplingOptions, forcing: ForcingOptions,
                         logprobs: int | None = None) -> list[Trajectory]:
    """`n` samples of the problem under budget forcing, as trajectories (kept by the context)."""
    return [s.trajectory for s in await force_samples(ctx, n, sampling, forcing, logprobs)]


async def force_samples(ctx: SearchContext, n: int, sampling: SamplingOptions, forcing: ForcingOptions,
                        logprobs: int | None = None) -> list[ForcedSample]:
    """`force_thinking`, with each sample's thinking and answer sections."""
    f = forcing
    left = ctx.ledger.generated_left()
    if left is not None and n * f.answer_tokens > left:
        # Every sample must end with an answer: no more samples than the budget has answers for.
        ctx.record("budget_forcing_fewer_samples", asked=n, answers_affordable=left // f.answer_tokens)
        n = left // f.answer_tokens
    samples = [ForcedSample() for _ in range(n)]
    stops = (f.think_end,) if f.think_end else ()
    while True:
        thinking = [s for s in samples if not (s.ended or s.capped)]
        if not thinking:
            break
        allowance = _allowance(ctx, samples, thinking, f)
        requests, asked = [], []
        for s in thinking:
            room = min(f.max_thinking_tokens - s.thinking_tokens, allowance)
            if room < 1:
                s.capped = True
                continue
            params = sampling.params(1, max_tokens=room, stop=stops, logprobs=logprobs)
            requests.append(GenerationRequest(ctx.prompt + s.text, params))
            asked.append(s)
        if not requests:
            break
        results = await ctx.generate(requests, keep=False)
        for s, result in zip(asked, results):
            if result is None or not result.completions:
                s.capped = True  # the budget could not pay for it: close the thinking
                continue
            c = result.completions[0]
            s.text += _strip_end(c.text, c.stop_reason if c.stop_reason == f.think_end else None)
            s.thinking_tokens += c.num_tokens
            s.logprobs += c.token_logprobs or []
            own_stop = c.stop_reason is not None and c.stop_reason != f.think_end  # the caller's stop string
            if c.finish_reason != "stop":
                s.capped = True
            elif not own_stop and s.thinking_tokens < f.min_thinking_tokens and s.extensions < f.max_extensions:
                s.text = s.text.rstrip() + "\n\n" + f.next_word(s.extensions)
                s.extensions += 1
                ctx.record("budget_forcing_continue", thinking_tokens=s.thinking_tokens, extension=s.extensions)
            else:
                s.ended = True
    await _answer(ctx, samples, sampling, f, logprobs)
    out = []
    for s in samples:
        completion = Completion(s.text, s.thinking_tokens + s.answer_tokens, "length" if s.capped else "stop",
                                s.logprobs if logprobs is not None else None)
        t = ctx.trajectory(completion)
        # With an answer section, its answer is the sample's (None if it states none): never a guess boxed
        # on the way or a number from the thinking.
        if s.answer_start is not None:
            stated = extract_answer(s.text[s.answer_start:])
            if stated != t.answer:
                t.answer = stated
                if t.correct is not None:
                    t.correct = stated is not None and answers_match(stated, ctx.problem.reference)
        s.trajectory = t
        out.append(s)
    ctx.record("budget_forcing", samples=n, extended=sum(s.extensions for s in samples),
               capped=sum(s.capped for s in samples), thinking_tokens=[s.thinking_tokens for s in samples])
    return out


def _allowance(ctx: SearchContext, samples: Sequence[ForcedSample], thinking: Sequence[ForcedSample], f: ForcingOptions) -> int:
    """Thinking tokens each still-thinking sample may use in this round, with every unanswered
    sample's answer set aside first (under no token cap: the configured maximum)."""
    left = ctx.ledger.generated_left()
    if left is None:
        return f.max_thinking_tokens
    unanswered = sum(not s.answered for s in samples)
    return (left - unanswered * f.answer_tokens) // max(len(thinking), 1)


async def _answer(ctx: SearchContext, samples: Sequence[ForcedSample], sampling: SamplingOptions, f: ForcingOptions,
                  logprobs: int | None) -> None:
    """Close every sample's thinking and let it answer: forced after the cap; after its own end, a model
    with an end-of-thinking text writes its answer itself, and one without has already answered (the
    answer is forced only when its output holds none)."""
    requests, asked = [], []
    for s in samples:
        s.thinking_end = len(s.text)
        if s.ended and not f.think_end and states_answer(s.text):
            s.answered = True
            continue
        s.text += f.think_end or ""
        s.answer_start = len(s.text)
        s.text += f.answer_prompt if s.capped or not f.think_end else ""
        requests.append(GenerationRequest(ctx.prompt + s.text,
                                          sampling.params(1, max_tokens=f.answer_tokens, logprobs=logprobs)))
        asked.append(s)
    if not requests:
        return
    for s, result in zip(asked, await ctx.generate(requests, keep=False)):
        s.answered = True
        if result is None or not result.completions:
            continue  # its tokens were set aside: only a seconds or prompt cap can refuse it (answer read from the text)
        c = result.completions[0]
        s.text += c.text
        s.answer_tokens += c.num_tokens
        s.logprobs += c.token_logprobs or []
