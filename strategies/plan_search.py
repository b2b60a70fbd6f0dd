"""PlanSearch (Wang et al., 2024): search over natural-language plans, then turn each into code.

Stages, each one batch of requests (problems run concurrently, so the backend batches them too):
1. first-order observations about the problem (one request, parsed into a list);
2. subsets of them (singletons, then pairs, ... up to `subset_size`); a second-order observation
   is drawn from each subset of two or more;
3. a solution sketch in plain words from each subset (with its second-order observation);
4. for each sketch a variant built on the negation of its idea (`negate`);
5. pseudocode from each sketch; 6. code from each pseudocode.
The candidates (one program per sketch) are scored by the scorer — on code problems the
execution verifier's public-test pass rate — and the best is chosen; ties go to the program
most candidates agree on. How many subsets are explored follows from the token budget: each
pass plans only what its worst case (every request at its max_tokens) still pays for, and
further passes use what the earlier ones left; once every subset is explored, what is left buys
more code samples from the plans' pseudocode (up to `max_code_samples` per plan). On a code
problem the planning stages see the task (its stub and docstring), not the instruction to
answer with code; the code stage gets the instruction.
"""
from __future__ import annotations

import itertools
import re

from pydantic import Field

from strategies.base import Outcome, Strategy
from ttc.core.budget import Budget
from ttc.core.config import SamplingOptions
from ttc.core.context import SearchContext
from ttc.core.errors import BudgetError, ConfigError
from ttc.core.selection import cluster_labels
from ttc.core.types import GenerationRequest, Problem, Trajectory

OBSERVATIONS = ("{problem}\n\nDo not write code yet. List {k} short, different observations about this problem "
                "that could help solve it, one per line, each line starting with '- '.")
SECOND_ORDER = ("{problem}\n\nObservations:\n{observations}\n\nCombine these observations into one new, deeper "
                "observation about how to solve the problem, in one or two sentences.")
SKETCH = ("{problem}\n\nUseful observations:\n{observations}\n\nUsing them, describe in plain words (no code) an idea "
          "for solving the problem, in a few sentences.")
NEGATE = ("{problem}\n\nAn idea for solving it:\n{sketch}\n\nSuppose this idea is wrong. Describe a different idea "
          "that does not rely on it, in plain words (no code), in a few sentences.")
PSEUDOCODE = "{problem}\n\nIdea:\n{sketch}\n\nWrite step-by-step pseudocode that implements this idea."
CODE = ("{problem}\n\nPseudocode:\n{pseudocode}\n\nNow write the Python function that implements it. Reply with the "
        "whole function in one ```python code block.")
MAX_PASSES = 4
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)")


class PlanSearchConfig(SamplingOptions):
    """Stage sizes and token lengths; `max_tokens` is the code stage's length."""

    max_tokens: int = Field(512, ge=1, le=1 << 20, description="Longest code completion, in tokens.")
    observations: int = Field(4, ge=1, le=32, description="First-order observations kept (and asked for).")
    subset_size: int = Field(2, ge=1, le=4, description="Largest subset of observations combined into one plan.")
    negate: bool = Field(True, description="Also build each plan's variant on the negation of its idea.")
    observation_tokens: int = Field(256, ge=16, le=8192, description="Length of the observations request.")
    second_order_tokens: int = Field(128, ge=16, le=8192, description="Length of each second-order observation.")
    sketch_tokens: int = Field(192, ge=16, le=8192, description="Length of each solution sketch (and negated one).")
    pseudocode_tokens: int = Field(256, ge=16, le=8192, description="Length of each pseudocode.")
    max_code_samples: int = Field(8, ge=1, le=256, description="Most programs per pseudocode: once every subset is "
                                  "explored, what the budget has left buys more code samples of the plans.")
    max_plans: int | None = Field(None, ge=1, le=4096, description="Most subsets explored; None: as many as the budget pays for.")


class PlanSearch(Strategy):
    name = "plan_search"
    Config = PlanSearchConfig

    def needs_scorer(self) -> bool:
        return True

    def selection(self) -> str:
        return "verifier"

    # ---------------------------------------------------------------- sizing
    def plan_cost(self, second_order: bool) -> int:
        """Worst-case generated tokens of one subset: its second-order observation, sketches, pseudocode, code."""
        c = self.config
        width = 2 if c.negate else 1
        return (c.second_order_tokens if second_order else 0) + width * (c.sketch_tokens + c.pseudocode_tokens + c.max_tokens)

    def check(self, budget: Budget, has_scorer: bool) -> None:
        super().check(budget, has_scorer)
        if budget.generated_tokens is None and self.config.max_plans is None:
            raise ConfigError("plan_search: max_plans is required when the budget has no generated_tokens cap")
        least = self.config.observation_tokens + self.plan_cost(second_order=False)
        if budget.generated_tokens is not None and budget.generated_tokens < least:
            raise BudgetError(f"budget={budget.generated_tokens} generated tokens cannot pay for one plan of plan_search "
                              f"(observations + sketch + pseudocode + code at their max_tokens: {least}); raise the "
                              "budget or lower the stage lengths")

    # ---------------------------------------------------------------- stages
    async def _ask(self, ctx: SearchContext, texts: list[str], max_tokens: int, stage: str) -> list[str | None]:
        """One batch: each text rendered as a user turn; the reply text, or None when it was not paid for."""
        if not texts:
            return []
        prompts = [await ctx.generator.arender_prompt(Problem(prompt=t, system=ctx.problem.system)) for t in texts]
        params = self.config.params(1, max_tokens=max_tokens)
        results = await ctx.generate([GenerationRequest(p, params) for p in prompts], keep=stage == "code")
        ctx.record("stage", stage=stage, requests=len(texts), answered=sum(r is not None for r in results))
        return [r.completions[0].text if r is not None and r.completions else None for r in results]

    async def run(self, ctx: SearchContext) -> Outcome:
        c = self.config
        # The planning stages see the task, not the instruction to answer with code at once.
        stub = ctx.problem.metadata.get("code_prompt")
        problem = f"Problem:\n```python\n{stub}```" if stub else ctx.problem.prompt
        (listing,) = await self._ask(ctx, [OBSERVATIONS.format(problem=problem, k=c.observations)],
                                     c.observation_tokens, "observations")
        observations = parse_observations(listing or "", c.observations)
        subsets = [s for size in range(1, c.subset_size + 1) for s in itertools.combinations(range(len(observations)), size)]
        if not subsets:
            subsets = [()]  # nothing usable was observed: plan from the problem alone
        if c.max_plans is not None:
            subsets = subsets[:c.max_plans]
        sketches: list[str] = []
        candidates: list[Trajectory] = []
        code_prompts: list[str] = []
        done = 0
        for _ in range(MAX_PASSES):
            batch = self._affordable(ctx, subsets[done:])
            if not batch:
                break
            done += len(batch)
            new_sketches, new_prompts, new_candidates = await self._plans(ctx, problem, observations, batch)
            sketches += new_sketches
            code_prompts += new_prompts
            candidates += new_candidates
        # Every subset explored and budget left: more programs from the plans' pseudocode.
        candidates += await self._more_code(ctx, code_prompts)
        ctx.record("plans", observations=len(observations), subsets=done, sketches=len(sketches), programs=len(candidates))
        best, rates = await self._select(ctx, candidates)
        metrics = {"observations": len(observations), "plans": done, "sketches": [s[:400] for s in sketches],
                   "samples": len(candidates), "selection": "verifier",
                   "passing_public": sum(r >= 1.0 for r in rates)}
        return Outcome(best.answer if best else None, best, candidates, metrics)

    def _affordable(self, ctx: SearchContext, remaining: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        left = ctx.ledger.generated_left()
        if left is None:
            return remaining
        batch, cost = [], 0
        for subset in remaining:
            price = self.plan_cost(second_order=len(subset) >= 2)
            if cost + price > left:
                break
            batch.append(subset)
            cost += price
        return batch

    async def _plans(self, ctx: SearchContext, problem: str, observations: list[str],
                     subsets: list[tuple[int, ...]]) -> tuple[list[str], list[Trajectory]]:
        c = self.config
        listed = [[observations[i] for i in s] for s in subsets]
        combined_at = [k for k, s in enumerate(subsets) if len(s) >= 2]
        second = await self._ask(ctx, [SECOND_ORDER.format(problem=problem, observations=_bullets(listed[k]))
                                       for k in combined_at], c.second_order_tokens, "second_order")
        for k, text in zip(combined_at, second):
            if text and text.strip():
                listed[k] = listed[k] + [text.strip()]
        sketches = await self._ask(ctx, [SKETCH.format(problem=problem, observations=_bullets(obs) or "- (none)")
                                         for obs in listed], c.sketch_tokens, "sketch")
        sketches = [s.strip() for s in sketches if s and s.strip()]
        if c.negate and sketches:
            negated = await self._ask(ctx, [NEGATE.format(problem=problem, sketch=s) for s in sketches], c.sketch_tokens, "negate")
            sketches += [s.strip() for s in negated if s and s.strip()]
        pseudo = await self._ask(ctx, [PSEUDOCODE.format(problem=problem, sketch=s) for s in sketches],
                                 c.pseudocode_tokens, "pseudocode")
        pseudo = [p.strip() for p in pseudo if p and p.strip()]
        prompts = [CODE.format(problem=ctx.problem.prompt, pseudocode=p) for p in pseudo]
        if not prompts:
            return sketches, [], []
        rendered = [await ctx.generator.arender_prompt(Problem(prompt=t, system=ctx.problem.system)) for t in prompts]
        return sketches, rendered, await self._code(ctx, rendered, 1)

    async def _code(self, ctx: SearchContext, rendered: list[str], n: int) -> list[Trajectory]:
        results = await ctx.generate([GenerationRequest(p, self.config.params(n)) for p in rendered])
        ctx.record("stage", stage="code", requests=len(rendered), answered=sum(r is not None for r in results))
        return [ctx.trajectory(c) for r in results if r is not None for c in r.completions]

    async def _more_code(self, ctx: SearchContext, rendered: list[str]) -> list[Trajectory]:
        left = ctx.ledger.generated_left()
        if not rendered or left is None:
            return []
        n = min(self.config.max_code_samples - 1, left // (self.config.max_tokens * len(rendered)))
        return await self._code(ctx, rendered, n) if n >= 1 else []

    async def _select(self, ctx: SearchContext, candidates: list[Trajectory]) -> tuple[Trajectory | None, list[float]]:
        """Highest score (public-test pass rate); among the tied, the program most candidates share."""
        if not candidates:
            return None, []
        rows = await ctx.score(candidates, final_only=True)
        if rows is None:  # the verifier budget is spent: agreement alone decides
            rows = [[0.0] for _ in candidates]
            ctx.record("selection_fallback", reason="verifier budget exhausted", selection="agreement")
        rates = [row[-1] if row else 0.0 for row in rows]
        for t, row in zip(candidates, rows):
            t.step_scores = list(row)
        labels = await ctx.offload(cluster_labels, [t.answer for t in candidates])
        size = {label: labels.count(label) for label in set(labels) if label >= 0}
        key = lambda i: (candidates[i].answer is not None, rates[i], size.get(labels[i], 0), -i)  # noqa: E731
        return candidates[max(range(len(candidates)), key=key)], rates


def parse_observations(text: str, limit: int) -> list[str]:
    """Bulleted or numbered lines of the reply; if it has none, its non-empty lines. Unique, at most `limit`."""
    lines = [m.group(1).strip() for m in map(_BULLET.match, text.splitlines()) if m]
    if not lines:
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("```")]
    unique: list[str] = []
    for line in lines:
        if line not in unique:
            unique.append(line[:500])
    return unique[:limit]


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)
