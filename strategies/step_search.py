"""The step protocol shared by every step-level search (beam, DVTS, REBASE, particle filtering).

A trajectory grows one step at a time: a continuation request carries the
prompt plus every step so far (so vLLM's prefix cache serves the shared part)
and stops at the step separator. A trajectory ends at EOS, at a final answer
(a closed \\boxed{}), at its token cap or at the step cap; an ended trajectory
is never asked to continue. Each search step issues one generate call for all
live nodes and one scoring call, and records the nodes in the trace.
"""
from __future__ import annotations

import abc
from typing import Literal, Sequence

from pydantic import Field, model_validator

from strategies.base import Outcome, SampledStrategy, SampledStrategyConfig, Strategy
from ttc.core.selection import choose
from ttc.core.budget import Budget
from ttc.core.context import STEP_SEPARATOR, SearchContext
from ttc.core.errors import BudgetError, ConfigError
from ttc.core.types import Completion, GenerationRequest, SamplingParams, Trajectory
from ttc.core.aggregation import Aggregation, aggregate
from ttc.core.answers import has_final_answer


#: Steps of max_step_tokens a budget-sized search must be able to pay for at its narrowest width.
STEPS_PAID_FOR = 2
#: Most searches one budget-sized solve runs one after the other.
MAX_SEARCHES = 16
#: A later search is sized at this many times what a trajectory of the last one cost.
WIDTH_MARGIN = 1.25
#: The widest later search (one step of it is one batch of this many continuations).
MAX_WIDTH = 256


class StepSearchConfig(SampledStrategyConfig):
    """Options shared by step-level searches; `max_tokens` caps a whole trajectory."""

    max_tokens: int = Field(512, ge=1, le=131072, description="Most tokens in one whole trajectory.")
    step_separator: str = Field(STEP_SEPARATOR, min_length=1, description="Text that ends a step.")
    max_steps: int = Field(12, ge=1, le=1000, description="Most steps in one trajectory.")
    max_step_tokens: int = Field(128, ge=1, description="Most tokens in one step.")
    aggregation: Aggregation = Field("last", description="Per-step scores -> one: last, min, prod, mean.")
    selection: Literal["weighted", "verifier", "majority", "combined"] = Field(
        "weighted", description="Final answer: score-weighted majority, best score, plain majority, or votes and "
        "verifier combined (log votes + verifier_weight x logit of the mean score per answer).")
    verifier_weight: float = Field(1.0, ge=0.0, le=1000.0,
                                   description="selection 'combined': weight g of the verifier's logit against log votes.")


class BeamWidthConfig(StepSearchConfig):
    """Step options plus M, the beam width, which must divide N."""

    beam_width: int = Field(4, ge=1, description="M: children per expanded node per step; N/M nodes are expanded.")

    @model_validator(mode="after")
    def _divides(self):
        if self.n is not None:
            require_divides(self.n, self.beam_width, "n", "beam_width")
        return self


class StepSearch(SampledStrategy):
    """Base of step-level searches: expansion, scoring, tracing and the final choice."""

    Config = StepSearchConfig
    reuses_probe = False  # its trajectories grow step by step: whole-sample probes are not its nodes

    def needs_scorer(self) -> bool:
        return True  # nodes are ranked by score during the search, whatever the final selection

    def selection(self) -> str:
        return self.config.selection

    def verifier_weight(self) -> float:
        return self.config.verifier_weight

    def width(self, budget: Budget) -> int:
        """N as given, or what the generated-token budget pays for (see `width_for`)."""
        c = self.config
        if c.n is not None:
            return c.n
        if budget.generated_tokens is None:
            raise ConfigError("n is required when the budget has no generated_tokens cap; pass n or an int budget")
        return self.width_for(budget.generated_tokens)

    def width_for(self, tokens: int) -> int:
        """The width a budget of `tokens` pays for: as many whole trajectories of max_tokens as fit, a
        multiple of the beam width; where that is fewer than two (or than one beam), the narrowest
        search that still pays for a handful of steps (STEPS_PAID_FOR of max_step_tokens each), since
        trajectories seldom run to max_tokens and a search that ends early is followed by another."""
        c, m = self.config, self.width_multiple()
        n = tokens // c.max_tokens
        n -= n % m
        if n >= max(m, 2):
            return n
        n = m * -(-2 // m)  # at least 2 trajectories, a whole number of beams
        if n * c.max_step_tokens * STEPS_PAID_FOR > tokens:
            raise BudgetError(f"budget={tokens} cannot pay for {STEPS_PAID_FOR} steps of {n} trajectories "
                              f"(beam_width={m}) of max_step_tokens={c.max_step_tokens}; raise the budget or "
                              "lower max_step_tokens")
        return n

    def check(self, budget: Budget, has_scorer: bool) -> None:
        Strategy.check(self, budget, has_scorer)  # not SampledStrategy's: a step search needs no whole sample
        self.width(budget)

    async def run(self, ctx: SearchContext) -> Outcome:
        """One search of width N; sized by the budget, further searches while the budget pays for one
        (what early finishers left is used, not stranded). The answer is chosen among all of them."""
        c = self.config
        n = self.width(ctx.ledger.budget)
        completed: list[Trajectory] = []
        active: list[Trajectory] = []
        metrics: dict = {"width": n, "steps_searched": 0}
        cost = 0.0
        for searches in range(1, MAX_SEARCHES + 1):
            spent = ctx.ledger.usage.generated_tokens
            done, live, found = await self.search(ctx, n)
            completed += done
            active = live or active
            metrics.update({k: v for k, v in found.items() if k not in metrics})
            metrics["steps_searched"] += found.get("steps_searched", 0)
            metrics["searches"] = searches
            left = ctx.ledger.generated_left()
            if c.n is not None or left is None or ctx.ledger.exhausted():
                break
            # The costliest trajectory seen so far: a search cut short by the budget looks cheaper than it is.
            cost = max(cost, (ctx.ledger.usage.generated_tokens - spent) / n)
            n = self.next_width(left, cost)
            if n is None:
                break
            ctx.record("search_again", search=searches + 1, width=n, tokens_left=left)
        return await self.finish(ctx, completed, active, metrics)

    def next_width(self, left: int, cost_per_trajectory: float) -> int | None:
        """The width of the next search: what `left` tokens pay for at what a trajectory of the last
        search really cost (with a margin), a multiple of the beam width, at most MAX_WIDTH; None when
        not even the narrowest search fits. A low estimate costs nothing: the ledger still caps."""
        m = self.width_multiple()
        n = int(left // (max(cost_per_trajectory, 1.0) * WIDTH_MARGIN))
        n = min(n, MAX_WIDTH)
        n -= n % m
        if n >= max(m, 2):
            return n
        try:
            return self.width_for(left)
        except BudgetError:
            return None

    @abc.abstractmethod
    async def search(self, ctx: SearchContext, n: int) -> tuple[list[Trajectory], list[Trajectory], dict]:
        """Grow and prune trajectories of width `n`: (the finished ones, the live ones when it stopped, figures)."""

    # ---- expansion --------------------------------------------------------------------------------
    def step_params(self, parent: Trajectory | None, n: int, *, greedy: bool = False,
                    logprobs: int | None = None) -> SamplingParams:
        c = self.config
        used = parent.num_tokens if parent else 0
        return c.params(n, max_tokens=max(1, min(c.max_step_tokens, c.max_tokens - used)), stop=(c.step_separator,),
                        greedy=greedy, logprobs=logprobs)

    async def extend(self, ctx: SearchContext, parents: Sequence[Trajectory | None], counts: Sequence[int],
                     *, greedy: bool = False) -> list[list[Trajectory]]:
        """Children of each parent (None = the root), `counts[i]` each, in ONE generate call.

        A parent that is finished, or that the budget cannot pay for, gets no children.
        """
        live = [i for i, (p, k) in enumerate(zip(parents, counts)) if k > 0 and (p is None or not p.finished)]
        # A scorer that reads token logprobs (mean_logprob) gets them for every step, parents' included.
        logprobs = 0 if ctx.scorer is not None and ctx.scorer.needs_logprobs else None
        requests = []
        for i in live:
            requests.append(GenerationRequest(ctx.prompt + (parents[i].text if parents[i] else ""),
                                              self.step_params(parents[i], counts[i], greedy=greedy,
                                                               logprobs=logprobs)))
        results = await ctx.generate(requests, keep=False) if requests else []
        children: list[list[Trajectory]] = [[] for _ in parents]
        for i, result in zip(live, results):
            if result is None:
                continue
            children[i] = [self.child(ctx, parents[i], c) for c in result.completions]
        return children

    async def roots(self, ctx: SearchContext, n: int) -> tuple[list[Trajectory], list[Trajectory]]:
        """A search's first step: the finished trajectories (none yet), and `n` root samples."""
        (live,) = await self.extend(ctx, [None], [n])
        return [], live

    def child(self, ctx: SearchContext, parent: Trajectory | None, completion: Completion) -> Trajectory:
        c = self.config
        steps = (list(parent.steps) if parent else []) + [completion.text]
        tokens = (parent.num_tokens if parent else 0) + completion.num_tokens
        ended_step = completion.finish_reason == "stop" and completion.stop_reason == c.step_separator
        if completion.finish_reason == "abort":
            finished, reason = True, "abort"
        elif completion.finish_reason == "stop" and not ended_step:
            finished, reason = True, "stop"  # EOS, or a user stop string
        elif has_final_answer("".join(steps[-2:])):  # a \boxed{} may straddle a step boundary
            finished, reason = True, "stop"
        elif tokens >= c.max_tokens:
            finished, reason = True, "length"
        elif len(steps) >= c.max_steps:
            finished, reason = True, "max_steps"
        else:
            finished, reason = False, completion.finish_reason
        logprobs = None
        if completion.token_logprobs is not None:
            logprobs = list(parent.token_logprobs or []) + list(completion.token_logprobs) if parent else \
                list(completion.token_logprobs)
        t = Trajectory(steps=steps, num_tokens=tokens, finish_reason=reason, finished=finished, token_logprobs=logprobs,
                       node_id=ctx.next_node_id(), parent_id=parent.node_id if parent else None)
        return ctx.keep(t)

    # ---- scoring and selection ---------------------------------------------------------------
    async def scores(self, ctx: SearchContext, nodes: Sequence[Trajectory]) -> list[float] | None:
        """Aggregated score of each node from ONE scoring call; None when the verifier budget is spent."""
        if not nodes:
            return []
        step_scores = await ctx.score(nodes)
        if step_scores is None:
            return None
        return [aggregate(s, self.config.aggregation) for s in step_scores]

    def record_step(self, ctx: SearchContext, step: int, nodes: Sequence[Trajectory], scores: Sequence[float],
                    kept: set[int], **extra) -> None:
        ctx.record("step", step=step, **extra, nodes=[
            {"id": t.node_id, "parent": t.parent_id, "score": round(s, 6), "finished": t.finished,
             "kept": t.node_id in kept, "answer": t.answer if t.finished else None,
             "text": t.steps[-1] if t.steps else ""}  # the step this node added (a report shows it)
            for t, s in zip(nodes, scores)])

    @staticmethod
    def bank_finished(completed: list[Trajectory], nodes: Sequence[Trajectory]) -> None:
        """Move finished nodes into the completed trajectories once (when a search stops early, too)."""
        seen = {id(t) for t in completed}
        completed.extend(t for t in nodes if t.finished and id(t) not in seen)

    async def finish(self, ctx: SearchContext, completed: list[Trajectory], active: list[Trajectory],
                     metrics: dict) -> Outcome:
        """Pick the answer among finished trajectories (or, if none finished, the live ones)."""
        finalists = completed or active
        choice = await choose(ctx, finalists, self.config.selection, self.config.aggregation, rescore=False,
                              verifier_weight=self.config.verifier_weight)
        if choice.votes is not None:
            metrics["votes"] = choice.votes
        metrics.update(completed=len(completed), selection=choice.selection,
                       steps_searched=metrics.get("steps_searched", 0))
        return Outcome(choice.answer, choice.best, list(finalists), metrics)



class BeamWidthSearch(StepSearch):
    """A step search whose width N is a multiple of its beam width M (beam search, DVTS)."""

    Config = BeamWidthConfig

    def width_multiple(self) -> int:
        return self.config.beam_width


def top_k(nodes: Sequence[Trajectory], scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k best nodes, best first; ties keep the earlier node (stable, seed-free)."""
    order = sorted(range(len(nodes)), key=lambda i: (-scores[i], i))
    return order[:k]


def require_divides(n: int, m: int, n_name: str, m_name: str) -> None:
    if n % m:
        raise ConfigError(f"{m_name} must divide {n_name}, got {n_name}={n} {m_name}={m}")
