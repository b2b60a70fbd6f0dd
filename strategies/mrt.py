"""MRT-style episodic thinking at test time (Qu et al., "Optimizing Test-Time Compute via Meta
Reinforcement Fine-Tuning"): think an episode at a time, measure each episode's progress, stop
when thinking stops paying.

Each trace is generated an episode at a time (an episode ends where the model changes course, at
a paragraph opening with one of the episode markers, at `max_tokens`, or when the model stops); all
traces of a problem go to the backend together, and problems run concurrently, so the backend
batches them all. At each boundary (every `episodes.group_size` episodes) the thinking so far is
cut off with the termination text and `forced_answers` short answers are sampled from it (the
prefix cache makes these forks cheap; each is charged). J of the prefix, the chance that stopping
here gives the right answer, is estimated without a reference: by **agreement** (the share of the
forced answers that agree with the consensus of all forced answers so far), or by the configured
**scorer** (the mean score of the forced answers). An episode's progress is the change of J it
brought. A trace stops when progress stays at or below `progress_threshold` for `patience`
boundaries, at the thinking cap, or when the budget runs out; when the model would stop by itself
while progress is still positive and budget remains, it is forced on with a continuation word
(and, like budget forcing, it is never let stop before `thinking.min_thinking_tokens`).

The answer is a weighted vote over every forced answer and each trace's final answer (forced at
the end when the trace did not answer itself): a forced answer weighs 1 (its score with the scorer
estimate) and a final answer weighs as much as one boundary's forced answers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, model_validator

from strategies.base import Outcome, Strategy
from strategies.thinking import ForcingOptions
from ttc.core.answers import answers_match, extract_answer, states_answer
from ttc.core.budget import Budget
from ttc.core.config import SamplingOptions
from ttc.core.context import SearchContext, split_steps
from ttc.core.episodes import EpisodeOptions
from ttc.core.errors import BudgetError
from ttc.core.selection import cluster_labels, pick
from ttc.core.success import continue_prefixes
from ttc.core.types import Completion, GenerationRequest, Trajectory

#: MRT's termination text: thinking is cut off here and the answer asked for.
TERMINATION = ("\n\nTime is up. Given the time I've spent and the approaches I've tried, I should stop thinking "
               "and formulate a final answer based on what I already have.\n\nFinal Answer:")


def _thinking_defaults() -> ForcingOptions:
    return ForcingOptions(answer_prompt=TERMINATION, max_thinking_tokens=1024, answer_tokens=32)


class MRTConfig(SamplingOptions):
    """Episodes, the progress estimate and the stopping rule; `thinking` holds the thinking limits,
    the delimiters and the termination text (its `answer_prompt`) that forces an answer."""

    max_tokens: int = Field(128, ge=1, le=1 << 20, description="Most tokens generated in one episode; an episode "
                            "also ends at a marker or when the model stops.")
    thinking: ForcingOptions = Field(default_factory=_thinking_defaults, description="Thinking limits, delimiters, "
                                     "continuation words, and the termination text (answer_prompt) with its "
                                     "answer length (answer_tokens); max_thinking_tokens None: 1024.")
    episodes: EpisodeOptions = Field(default_factory=EpisodeOptions)
    traces: int = Field(1, ge=1, le=256, description="Independent traces per problem, voted together.")
    forced_answers: int = Field(4, ge=1, le=256, description="Answers forced from each boundary's prefix (m).")
    progress: Literal["agreement", "scorer"] = Field(
        "agreement", description="J of a prefix: agreement of its forced answers with the consensus of all forced "
        "answers, or the scorer's mean score of them.")
    progress_threshold: float = Field(0.0, ge=-1.0, le=1.0, description="An episode whose progress is at most this "
                                      "made none.")
    patience: int = Field(2, ge=1, le=64, description="Boundaries in a row without progress that stop a trace.")
    max_episodes: int = Field(32, ge=1, le=4096, description="Most episodes generated per trace.")

    @model_validator(mode="after")
    def _thinking_cap(self):
        f = self.thinking
        if f.max_thinking_tokens is None:  # mrt's episodes have their own length: the cap cannot come from it
            self.__dict__["thinking"] = f.within(1024 + f.answer_tokens, explicit=False)
        return self


@dataclass
class _Boundary:
    offset: int  # the thinking text up to here was cut off
    answers: list[str | None]
    scores: list[float] | None = None
    tokens: int = 0
    j: float = float("nan")


@dataclass
class _Trace:
    text: str = ""
    tokens: int = 0
    logprobs: list[float] = field(default_factory=list)
    boundaries: list[_Boundary] = field(default_factory=list)
    episodes: int = 0
    pending: int = 0  # episodes since the last boundary
    extensions: int = 0
    state: str = "thinking"  # thinking | ended (the model stopped) | stopped (no progress) | capped
    final_answer: str | None = None
    answer_start: int | None = None
    answer_tokens: int = 0
    carry: str = ""  # the marker that ended the last episode: it opens the next one

    def progress(self) -> list[float]:
        js = [b.j for b in self.boundaries]
        return [b - a for a, b in zip(js, js[1:])]

    def stalled(self, threshold: float) -> int:
        """Boundaries in a row, from the last, whose episode made no progress."""
        run = 0
        for p in reversed(self.progress()):
            if p > threshold:
                break
            run += 1
        return run


class MRT(Strategy):
    name = "mrt"
    Config = MRTConfig

    def needs_scorer(self) -> bool:
        return self.config.progress == "scorer"

    def selection(self) -> str:
        return "weighted"

    def check(self, budget: Budget, has_scorer: bool) -> None:
        super().check(budget, has_scorer)
        c = self.config
        least = c.traces * (c.forced_answers + 1) * c.thinking.answer_tokens
        if budget.generated_tokens is not None and budget.generated_tokens < least:
            raise BudgetError(f"budget={budget.generated_tokens} generated tokens cannot pay for mrt's forced answers "
                              f"of one boundary and the final answer ({least} tokens for traces={c.traces}, "
                              f"forced_answers={c.forced_answers}, thinking.answer_tokens={c.thinking.answer_tokens})")

    # ---------------------------------------------------------------- helpers
    def _stops(self) -> tuple[str, ...]:
        e, f = self.config.episodes, self.config.thinking
        return (*(e.paragraph_break + m for m in e.markers), *((f.think_end,) if f.think_end else ()))

    def _answer_reserve(self) -> int:
        """Generated tokens one thinking trace keeps for its next boundary's forced answers and its final one."""
        return (self.config.forced_answers + 1) * self.config.thinking.answer_tokens

    def _room(self, ctx: SearchContext, traces: list[_Trace], t: _Trace) -> int:
        c = self.config
        room = min(c.max_tokens, c.thinking.max_thinking_tokens - t.tokens)
        left = ctx.ledger.generated_left()
        if left is not None:
            thinking = [x for x in traces if x.state == "thinking"]
            finals = sum(x.final_answer is None for x in traces if x.state != "thinking")
            spare = left - len(thinking) * self._answer_reserve() - finals * c.thinking.answer_tokens
            room = min(room, spare // max(len(thinking), 1))
        return room

    # ---------------------------------------------------------------- measuring
    async def _measure(self, ctx: SearchContext, traces: list[_Trace]) -> None:
        """Force answers at the end of each given trace's thinking so far: one batch."""
        c = self.config
        if not traces:
            return
        params = c.params(c.forced_answers, max_tokens=c.thinking.answer_tokens)
        prefixes = [t.text + c.thinking.answer_prompt for t in traces]
        results = await continue_prefixes(ctx, prefixes, params)
        for t, prefix, r in zip(traces, prefixes, results):
            if r is None:  # the budget could not pay: no boundary here, and no more thinking
                t.state = "capped" if t.state == "thinking" else t.state
                continue
            b = _Boundary(len(t.text), r.answers, tokens=r.tokens)
            if c.progress == "scorer":
                forced = [Trajectory(split_steps(prefix + text), 0, "stop", answer=a) for text, a in zip(r.texts, r.answers)]
                rows = await ctx.score(forced, final_only=True)
                b.scores = [row[-1] if row else 0.0 for row in rows] if rows is not None else None
            t.boundaries.append(b)
            t.pending = 0
        self._estimate(ctx, traces)

    def _estimate(self, ctx: SearchContext, traces: list[_Trace]) -> None:
        """J of every boundary of these traces, against the consensus of everything forced so far."""
        boundaries = [b for t in traces for b in t.boundaries]
        if self.config.progress == "scorer":
            for b in boundaries:
                if b.scores:
                    b.j = sum(b.scores) / len(b.scores)
                elif b.scores is None:
                    b.j = float("nan")
            return
        answers = [a for b in boundaries for a in b.answers]
        labels = cluster_labels(answers)
        counts: dict[int, int] = {}
        for label in labels:
            if label >= 0:
                counts[label] = counts.get(label, 0) + 1
        consensus = max(counts, key=lambda k: (counts[k], -labels.index(k))) if counts else None
        at = 0
        for b in boundaries:
            own = labels[at:at + len(b.answers)]
            at += len(b.answers)
            b.j = sum(label == consensus for label in own) / len(own) if own and consensus is not None else 0.0

    # ---------------------------------------------------------------- thinking
    async def _episode(self, ctx: SearchContext, traces: list[_Trace], words: list[int]) -> list[_Trace]:
        """One episode of every thinking trace; returns the traces that reached a boundary."""
        c, f = self.config, self.config.thinking
        requests, asked = [], []
        for t in traces:
            if t.state != "thinking":
                continue
            room = self._room(ctx, traces, t)
            if room < 1 or t.episodes >= c.max_episodes:
                t.state = "capped"
                continue
            requests.append(GenerationRequest(ctx.prompt + t.text, c.params(1, max_tokens=room, stop=self._stops(),
                                                                             logprobs=0)))
            asked.append(t)
        if not requests:
            return []
        reached = []
        for t, result in zip(asked, await ctx.generate(requests, keep=False)):
            if result is None or not result.completions:
                t.state = "capped"
                continue
            out = result.completions[0]
            t.episodes += 1
            t.pending += 1
            t.tokens += out.num_tokens
            t.logprobs += out.token_logprobs or []
            stop = out.stop_reason
            marker = stop is not None and stop != f.think_end
            text = out.text[: -len(stop)] if marker or (stop and stop == f.think_end) else out.text
            t.text += text
            model_stopped = out.finish_reason == "stop" and not marker
            if out.finish_reason != "stop" and t.tokens >= f.max_thinking_tokens:
                t.state = "capped"
            if model_stopped:
                t.state = "ending"  # measured at its end first: whether to force it on needs that episode's progress
                reached.append(t)
            since = len(t.text) - (t.boundaries[-1].offset if t.boundaries else 0)
            if marker:
                # The marker opens the next episode: it joins the thinking after this boundary is measured.
                t.carry = stop
                if since >= c.episodes.min_chars and t.pending >= c.episodes.group_size:
                    reached.append(t)
            elif t.state == "thinking" and t.pending >= c.episodes.group_size and since >= c.episodes.min_chars:
                reached.append(t)
        return reached

    def _end_or_go_on(self, ctx: SearchContext, traces: list[_Trace], t: _Trace, words: list[int]) -> None:
        """The model stopped thinking: let it, unless its thinking is still under the minimum, or its last
        episode made progress and the budget has room for more (then a continuation word forces it on)."""
        c, f = self.config, self.config.thinking
        t.state = "thinking"  # counted as such while its room is sized
        go_on = t.tokens < f.min_thinking_tokens or (self._last_progress(t) > c.progress_threshold
                                                     and self._room(ctx, traces, t) >= 1)
        if go_on and t.extensions < f.max_extensions and t.episodes < c.max_episodes:
            words[0] += 1
            t.extensions += 1
            t.text = t.text.rstrip()
            t.carry = c.episodes.paragraph_break + f.continuation_words[(words[0] - 1) % len(f.continuation_words)]
            ctx.record("mrt_forced_on", episode=t.episodes, thinking_tokens=t.tokens)
        else:
            t.state = "ended"

    def _last_progress(self, t: _Trace) -> float:
        p = t.progress()
        return p[-1] if p else float("inf")

    # ---------------------------------------------------------------- answering
    async def _final_answers(self, ctx: SearchContext, traces: list[_Trace]) -> None:
        """Each trace's own answer: after its end of thinking (a model with think_end writes it), in its
        output (a model without), or forced with the termination text when it was cut off."""
        c, f = self.config, self.config.thinking
        requests, asked = [], []
        for t in traces:
            if t.state == "ended" and not f.think_end and states_answer(t.text):
                t.final_answer = extract_answer(t.text)
                continue
            t.text += (f.think_end or "") if t.state == "ended" and f.think_end else ""
            t.answer_start = len(t.text)
            if not (t.state == "ended" and f.think_end):
                t.text += f.answer_prompt
            requests.append(GenerationRequest(ctx.prompt + t.text, c.params(1, max_tokens=f.answer_tokens, logprobs=0)))
            asked.append(t)
        if requests:
            for t, result in zip(asked, await ctx.generate(requests, keep=False)):
                if result is None or not result.completions:
                    continue
                out = result.completions[0]
                t.text += out.text
                t.answer_tokens += out.num_tokens
                t.logprobs += out.token_logprobs or []
                t.final_answer = extract_answer(t.text[t.answer_start:])

    def _vote(self, traces: list[_Trace]) -> tuple[str | None, dict[str, float]]:
        m = self.config.forced_answers
        answers, weights = [], []
        for t in traces:
            for b in t.boundaries:
                answers += b.answers
                weights += b.scores if b.scores is not None and self.config.progress == "scorer" else [1.0] * len(b.answers)
            if t.final_answer is not None:
                answers.append(t.final_answer)
                weights.append(float(m))
        labels = cluster_labels(answers)
        i = pick(labels, weights, "weighted")
        totals: dict[str, float] = {}
        first: dict[int, str] = {}
        for a, label, w in zip(answers, labels, weights):
            if label >= 0:
                key = first.setdefault(label, a)
                totals[key] = round(totals.get(key, 0.0) + w, 6)
        return (answers[i] if i is not None and labels[i] >= 0 else None), totals

    # ---------------------------------------------------------------- run
    async def run(self, ctx: SearchContext) -> Outcome:
        c = self.config
        traces = [_Trace() for _ in range(c.traces)]
        ctx.record("mrt", traces=c.traces, forced_answers=c.forced_answers, episode_tokens=c.max_tokens)
        await self._measure(ctx, traces)  # J before any thinking: the first episode's progress needs it
        words = [0]
        while any(t.state == "thinking" for t in traces):
            reached = await self._episode(ctx, traces, words)
            await self._measure(ctx, reached)
            for t in reached:
                if t.state == "ending":
                    self._end_or_go_on(ctx, traces, t, words)
                elif t.state == "thinking" and t.stalled(c.progress_threshold) >= c.patience:
                    t.state = "stopped"
                    ctx.record("mrt_stopped", episode=t.episodes, j=[round(b.j, 4) for b in t.boundaries])
            for t in traces:  # a trace that goes on opens its next episode with the marker it stopped at
                t.text, t.carry = t.text + t.carry if t.state == "thinking" else t.text, ""
        await self._final_answers(ctx, traces)
        answer, votes = await ctx.offload(self._vote, traces)
        candidates = []
        for t in traces:
            completion = Completion(t.text, t.tokens + t.answer_tokens, "stop" if t.state == "ended" else "length",
                                    t.logprobs)
            traj = ctx.trajectory(completion)
            if t.final_answer is not None and t.final_answer != traj.answer:
                traj.answer = t.final_answer
                if traj.correct is not None:
                    traj.correct = answers_match(t.final_answer, ctx.problem.reference)
            candidates.append(traj)
        best = next((x for x in candidates if x.answer is not None and answer is not None
                     and answers_match(x.answer, answer)), candidates[0] if candidates else None)
        metrics = {
            "votes": votes, "episodes": [t.episodes for t in traces], "ends": [t.state for t in traces],
            "j": [[round(b.j, 4) for b in t.boundaries] for t in traces],
            "progress": [[round(p, 4) for p in t.progress()] for t in traces],
            "forced_answers": sum(len(b.answers) for t in traces for b in t.boundaries),
            "forced_answer_tokens": sum(b.tokens for t in traces for b in t.boundaries),
            "thinking_tokens": [t.tokens for t in traces], "extensions": [t.extensions for t in traces],
        }
        if ctx.problem.reference is not None:
            metrics["forced_correct"] = [[sum(a is not None and answers_match(a, ctx.problem.reference)
                                              for a in b.answers) for b in t.boundaries] for t in traces]
        return Outcome(answer, best, candidates, metrics)
