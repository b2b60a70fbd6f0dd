"""How likely the policy is to succeed from a partial solution: Monte-Carlo estimates of J(prefix).

J(prefix) is the probability that the policy, continuing from `prefix`, reaches a correct
final answer (Math-Shepherd's "soft" step label; MRT's progress is the change of J over
an episode). It is estimated from k completions per prefix: J ~= successes / k.

One estimator serves labelling (`ttc label`), verifier evaluation and MRT-style
strategies. It is control flow over a SearchContext, so its requests are capped,
reserved and charged by the ledger like every other call, and all prefixes of a
problem go to the backend as one batch: continuations of the same trajectory share
its prompt and earlier steps, which the prefix cache then serves once.

What counts as success is a judge of the final answer: by default agreement with the
problem's reference; a caller without references (test time) passes its own, for
example agreement with a majority of forced answers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ttc.core.answers import answers_match, extract_answer
from ttc.core.context import SearchContext
from ttc.core.errors import ConfigError
from ttc.core.types import GenerationRequest, SamplingParams

#: Decides whether a final answer (None when there is none) is a success.
Judge = Callable[[str | None], bool]


@dataclass
class SuccessEstimate:
    """The k continuations of one prefix and what they reached."""

    successes: int
    trials: int
    answers: list[str | None] = field(default_factory=list)
    tokens: int = 0  # generated tokens the continuations cost

    @property
    def j(self) -> float:
        """The estimate of J: the share of continuations that succeeded."""
        return self.successes / self.trials if self.trials else float("nan")


def reference_judge(reference: str | None) -> Judge:
    """Success = a final answer equivalent to `reference`."""
    if reference is None:
        raise ConfigError("a success estimate needs the problem's reference answer (problem.reference is None), "
                          "or a judge of its own")

    def judge(answer: str | None) -> bool:
        return answer is not None and answers_match(answer, reference)

    return judge


@dataclass
class Continuations:
    """The continuations of one prefix: their texts (empty for a prefix that was already finished),
    the final answer each reached and the generated tokens they cost."""

    texts: list[str]
    answers: list[str | None]
    tokens: int = 0
    logprobs: list[list[float] | None] | None = None  # per continuation, when the params asked for them


async def continue_prefixes(ctx: SearchContext, prefixes: Sequence[str], params: SamplingParams, *,
                            forced: bool = False) -> list[Continuations | None]:
    """`params.n` continuations of each prefix (text after the rendered prompt), as one batch; None for
    a prefix the budget could not pay for. They are measurements, not candidates of the solve.

    A prefix that already holds a final answer (it ends the solution) needs no continuation: its
    answer is known at no cost, and reported `params.n` times. With `forced` (each prefix ends in a
    request for the answer, such as MRT's termination text) every prefix is continued, and an answer
    is read from the continuation alone: a thinking that boxed a guess on the way, or a number in it,
    is not an answer the policy gave when asked.
    """
    if params.n < 1:
        raise ConfigError(f"continuations per prefix (params.n) must be >= 1, got {params.n}")
    out: list[Continuations | None] = [None] * len(prefixes)
    todo: list[int] = []
    for i, prefix in enumerate(prefixes):
        answer = extract_answer(prefix) if not forced and _is_finished(prefix) else None
        if answer is not None:
            out[i] = Continuations([""] * params.n, [answer] * params.n)
        else:
            todo.append(i)
    requests = [GenerationRequest(ctx.prompt + prefixes[i], params) for i in todo]
    # keep=False: continuations are measurements, not candidates of the solve.
    results = await ctx.generate(requests, keep=False) if requests else []
    for i, result in zip(todo, results):
        if result is None or not result.completions:
            continue
        texts = [c.text for c in result.completions]
        answers = [extract_answer(t if forced else prefixes[i] + t) for t in texts]
        out[i] = Continuations(texts, answers, sum(c.num_tokens for c in result.completions),
                               [c.token_logprobs for c in result.completions])
    return out


async def estimate_success(ctx: SearchContext, prefixes: Sequence[str], params: SamplingParams, *,
                           judge: Judge | None = None, forced: bool = False) -> list[SuccessEstimate | None]:
    """J of each prefix (text after the rendered prompt) from `params.n` continuations of up to
    `params.max_tokens` tokens; None for a prefix the budget could not pay for.

    A prefix that already holds a final answer (it ends the solution) needs no continuation:
    its success is known exactly, at no cost, and reported as `params.n` trials (unless `forced`:
    see `continue_prefixes`).
    """
    judge = judge or reference_judge(ctx.problem.reference)
    out: list[SuccessEstimate | None] = []
    for c in await continue_prefixes(ctx, prefixes, params, forced=forced):
        out.append(None if c is None else
                   SuccessEstimate(sum(judge(a) for a in c.answers), len(c.answers), c.answers, c.tokens))
    return out


def _is_finished(prefix: str) -> bool:
    """A prefix that states its final answer explicitly (a boxed answer) is a finished solution."""
    return "\\boxed" in prefix or "\\fbox" in prefix


def step_prefixes(steps: Sequence[str]) -> list[str]:
    """The prefix that ends at each step: steps[:1], steps[:2], ... joined."""
    out, text = [], ""
    for s in steps:
        text += s
        out.append(text)
    return out
