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


class MRTThinking(ForcingOptions):
    """mrt's thinking: budget forcing's limits and delimiters, with MRT's termination text as the
    prompt that forces an answer (used for every forced answer, at boundaries and at the end)."""

    answer_prompt: str = Field(TERMINATION, min_length=1, description="Appended (after think_end, if any) to cut the "
                               "thinking off and ask for the answer: MRT's termination text by default.")
    answer_tokens: int = Field(32, ge=1, le=8192, description="Most tokens of each forced answer.")


class MRTConfig(SamplingOptions):
    """Episodes, the progress estimate and the stopping rule; `thinking` holds the thinking limits,
    the delimiters and the termination text (its `answer_prompt`) that forces an answer."""

    max_tokens: int = Field(128, ge=1, le=1 << 20, description="Most tokens generated in one episode; an episode "
                            "also ends at a marker or when the model stops.")
    thinking: MRTThinking = Field(default_factory=MRTThinking, description="Thinking limits (max_thinking_tokens None: "
                                  "1024), delimiters, continuation words, and the termination text (answer_prompt) "
                                  "with the forced answers' length (answer_tokens).")
    final_answer_tokens: int | None = Field(
        None, ge=1, le=65536, description="Most tokens of a trace's final answer (a model with think_end writes it "
        "after its thinking, often with a summary); None: thinking.answer_tokens.")
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
            self.__dict__["thinking"] = f.within(1024 + f.answer_tokens, explicit=False, name="thinking",
                                                 source="mrt's default thinking cap 1024 + answer_tokens")
        return self

    def final_tokens(self) -> int:
        return self.final_answer_tokens or self.thinking.answer_tokens


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
    carry: str = ""  # the marker that ended the last episode (or a continuation word): it opens the next one
    forced_unscored: int = 0  # tokens of forced answers the verifier budget could not score
    own_stop: bool = False  # it stopped at one of the caller's stop strings: it ends there

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
        least = c.traces * (c.forced_answers * c.thinking.answer_tokens + c.final_tokens())
        if budget.generated_tokens is not None and budget.generated_tokens < least:
            raise BudgetError(f"budget={budget.generated_tokens} generated tokens cannot pay for mrt's forced answers "
                              f"of one boundary and the final answer ({least} tokens for traces={c.traces}, "
                              f"forced_answers={c.forced_answers}, thinking.answer_tokens={c.thinking.answer_tokens}, "
                              f"final_answer_tokens={c.final_tokens()})")

    # ---------------------------------------------------------------- helpers
    def _markers(self) -> tuple[str, ...]:
        e = self.config.episodes
        return tuple(e.paragraph_break + m for m in e.markers)

    def _stops(self) -> tuple[str, ...]:
        f = self.config.thinking
        return (*self._markers(), *((f.think_end,) if f.think_end else ()))

    def _cut_off(self, text: str) -> str:
        """The thinking so far, closed and followed by the termination text."""
        f = self.config.thinking
        return text + (f.think_end or "") + f.answer_prompt

    def _room(self, ctx: SearchContext, traces: list[_Trace], t: _Trace) -> int:
        """Thinking tokens `t` may generate next: within the cap, after every thinking trace has set aside its
        next boundary's forced answers and its final answer, and every finished one its final answer."""
        c = self.config
        room = min(c.max_tokens, c.thinking.max_thinking_tokens - t.tokens)
        left = ctx.ledger.generated_left()
        if left is not None:
            thinking = [x for x in traces if x.state == "thinking" or x is t]
            finals = sum(x.final_answer is None for x in traces if x not in thinking)
            reserve = c.forced_answers * c.thinking.answer_tokens + c.final_tokens()
            spare = left - len(thinking) * reserve - finals * c.final_tokens()
            room = min(room, spare // len(thinking))
        return room

    # ---------------------------------------------------------------- measuring
    async def _measure(self, ctx: SearchContext, traces: list[_Trace], every: list[_Trace]) -> None:
        """Force answers at the end of each of `traces`' thinking so far (one batch); then J of every
        boundary of `every` trace, since the consensus they are judged by has moved."""
        c = self.config
        if not traces:
            return
        logprobs = 0 if c.progress == "scorer" and ctx.scorer is not None and ctx.scorer.needs_logprobs else None
        params = c.params(c.forced_answers, max_tokens=c.thinking.answer_tokens, logprobs=logprobs)
        prefixes = [self._cut_off(t.text) for t in traces]
        # forced: a guess boxed on the way does not answer for the policy; every forced answer is sampled.
        results = await continue_prefixes(ctx, prefixes, params, forced=True)
        for t, prefix, r in zip(traces, prefixes, results):
            b = None if r is None else _Boundary(len(t.text), r.answers, tokens=r.tokens)
            if b is not None and c.progress == "scorer":
                forced = [Trajectory(split_steps(prefix + text), 0, "stop", answer=a, token_logprobs=lp)
                          for text, a, lp in zip(r.texts, r.answers, r.logprobs or [None] * len(r.texts))]
                rows = await ctx.score(forced, final_only=True)
                if rows is None:  # the verifier budget is spent: J cannot be known, so thinking ends here
                    t.forced_unscored += r.tokens
                    b = None
                else:
                    b.scores = [row[-1] if row else 0.0 for row in rows]
            if b is None:  # the budget could not pay: no boundary here, and no more thinking
                if t.state in ("thinking", "ending"):
                    t.state = "capped" if t.state == "thinking" else "ended"
                continue
            t.boundaries.append(b)
            t.pending = 0
        self._estimate(every)

    def _estimate(self, traces: list[_Trace]) -> None:
        """J of every boundary: its forced answers' mean score, or their agreement with the consensus of
        all forced answers of all traces so far."""
        boundaries = [b for t in traces for b in t.boundaries]
        if self.config.progress == "scorer":
            for b in boundaries:
                b.j = sum(b.scores) / len(b.scores) if b.scores else 0.0
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
    async def _episode(self, ctx: SearchContext, traces: list[_Trace]) -> list[_Trace]:
        """One episode of every thinking trace; returns the traces whose thinking reached a boundary.

        An episode here is one generation: it ends at a marker (a stop string: so "Waiting" ends one
        too), at max_tokens, or where the model stops. Episodes closer than `episodes.min_chars` to the
        last boundary, or fewer than `episodes.group_size` since it, are not measured separately."""
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
        markers = self._markers()
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
            marker = out.finish_reason == "stop" and stop in markers
            ended_thinking = out.finish_reason == "stop" and stop is not None and stop == f.think_end
            t.text += out.text[: -len(stop)] if marker or ended_thinking else out.text
            since = len(t.text) - (t.boundaries[-1].offset if t.boundaries else 0)
            if out.finish_reason == "stop" and not marker:
                # The model stopped thinking (EOS or think_end): measured at its end first, since whether to
                # force it on depends on that last episode's progress. The caller's own stop string ends it.
                t.state = "ending"
                t.own_stop = stop is not None and not ended_thinking
                reached.append(t)
            elif out.finish_reason != "stop" and t.tokens >= f.max_thinking_tokens:
                t.state = "capped"
            else:
                if marker:
                    t.carry = stop  # the marker opens the next episode, after this boundary is measured
                if t.pending >= c.episodes.group_size and since >= c.episodes.min_chars:
                    reached.append(t)
        return reached

    def _end_or_go_on(self, ctx: SearchContext, traces: list[_Trace], t: _Trace) -> None:
        """The model stopped thinking: let it, unless its thinking is still under the minimum, or its last
        episode made progress; and only while the budget has room (then a continuation word forces it on)."""
        c, f = self.config, self.config.thinking
        wanted = not t.own_stop and (t.tokens < f.min_thinking_tokens or self._last_progress(t) > c.progress_threshold)
        if wanted and self._room(ctx, traces, t) >= 1 and t.extensions < f.max_extensions \
                and t.episodes < c.max_episodes:
            t.text = t.text.rstrip()
            t.carry = c.episodes.paragraph_break + f.next_word(t.extensions)
            t.extensions += 1
            t.state = "thinking"
            ctx.record("mrt_forced_on", episode=t.episodes, thinking_tokens=t.tokens)
        else:
            t.state = "ended"

    def _last_progress(self, t: _Trace) -> float:
        p = t.progress()
        return p[-1] if p else float("inf")

    # ---------------------------------------------------------------- answering
    async def _final_answers(self, ctx: SearchContext, traces: list[_Trace]) -> None:
        """Each trace's own answer: after its end of thinking (a model with think_end writes it), in its
        output (a model without, when it states one), or forced with the termination text when it was
        cut off (or stated none)."""
        c, f = self.config, self.config.thinking
        requests, asked = [], []
        for t in traces:
            natural = t.state == "ended"
            if natural and not f.think_end and states_answer(t.text):
                t.final_answer = extract_answer(t.text)
                continue
            if natural and f.think_end:
                t.text += f.think_end
                t.answer_start = len(t.text)
            else:
                t.answer_start = len(t.text)
                t.text = self._cut_off(t.text)
            requests.append(GenerationRequest(ctx.prompt + t.text, c.params(1, max_tokens=c.final_tokens(), logprobs=0)))
            asked.append(t)
        if requests:
            for t, result in zip(asked, await ctx.generate(requests, keep=False)):
                if result is None or not result.completions:
                    continue  # its tokens were set aside: only a seconds or prompt cap refuses it
                out = result.completions[0]
                t.text += out.text
                t.answer_tokens += out.num_tokens
                t.logprobs += out.token_logprobs or []
                t.final_answer = extract_answer(t.text[t.answer_start:])

    def _vote(self, traces: list[_Trace]) -> tuple[str | None, dict[str, float]]:
        c = self.config
        answers, weights = [], []
        for t in traces:
            for b in t.boundaries:
                answers += b.answers
                weights += b.scores if c.progress == "scorer" and b.scores is not None else [1.0] * len(b.answers)
            if t.final_answer is not None:
                answers.append(t.final_answer)
                weights.append(float(c.forced_answers))  # a final answer weighs as much as one boundary
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
        await self._measure(ctx, traces, traces)  # J before any thinking: the first episode's progress needs it
        while any(t.state == "thinking" for t in traces):
            reached = await self._episode(ctx, traces)
            await self._measure(ctx, reached, traces)
            for t in reached:
                if t.state == "ending":
                    self._end_or_go_on(ctx, traces, t)
                elif t.state == "thinking" and t.stalled(c.progress_threshold) >= c.patience:
                    t.state = "stopped"
                    ctx.record("mrt_stopped", episode=t.episodes, j=[round(b.j, 4) for b in t.boundaries])
            for t in traces:  # a trace that goes on opens its next episode with the marker or word it stopped at
                if t.carry and t.state == "thinking" and self._room(ctx, traces, t) >= 1 \
                        and t.episodes < c.max_episodes:
                    t.text += t.carry
                elif t.carry and t.state == "thinking":
                    t.state = "capped"  # no room or episode left after it: the marker is not left dangling
                t.carry = ""
        await self._final_answers(ctx, traces)
        answer, votes = await ctx.offload(self._vote, traces)
        candidates = []
        for t in traces:
            completion = Completion(t.text, t.tokens + t.answer_tokens, "stop" if t.state == "ended" else "length",
                                    t.logprobs)
            traj = ctx.trajectory(completion)
            # With an answer section, its answer is the trace's (None if it states none), never a guess
            # boxed in the thinking; a trace that stated its answer in its output keeps that one.
            own = t.final_answer if t.answer_start is not None or t.final_answer is not None else traj.answer
            if own != traj.answer:
                traj.answer = own
                if traj.correct is not None:
                    traj.correct = own is not None and answers_match(own, ctx.problem.reference)
            candidates.append(traj)
        best = next((x for x in candidates if x.answer is not None and answer is not None
                     and answers_match(x.answer, answer)), candidates[0] if candidates else None)
        metrics = {
            "votes": votes, "episodes": [t.episodes for t in traces], "ends": [t.state for t in traces],
            "j": [[round(b.j, 4) for b in t.boundaries] for t in traces],
            "progress": [[round(p, 4) for p in t.progress()] for t in traces],
            "forced_answers": sum(len(b.answers) for t in traces for b in t.boundaries),
            "forced_answer_tokens": sum(b.tokens for t in traces for b in t.boundaries)
            + sum(t.forced_unscored for t in traces),
            "thinking_tokens": [t.tokens for t in traces], "extensions": [t.extensions for t in traces],
        }
        if ctx.problem.reference is not None:
            metrics["forced_correct"] = [[sum(a is not None and answers_match(a, ctx.problem.reference)
                                              for a in b.answers) for b in t.boundaries] for t in traces]
        return Outcome(answer, best, candidates, metrics)
