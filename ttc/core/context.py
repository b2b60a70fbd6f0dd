"""SearchContext: the only door a strategy has to compute.

A strategy asks its context for samples and scores; the context caps each
request with the ledger before it is sent, charges what came back, turns
completions into trajectories (answer extracted, checked against the reference
when one is known) and records a trace of the search.
"""
from __future__ import annotations

import asyncio
import random
import re
from typing import Any, Callable, Sequence

from ttc.core.budget import Ledger, Reservation
from ttc.core.errors import BackendError
from ttc.core.plugins import Generator, Scorer
from ttc.core.types import Completion, GenerationRequest, GenerationResult, Problem, SamplingParams, Trajectory
from ttc.core.answers import answers_match, extract_answer
from ttc.core.code import extract_program, is_code_problem

#: What ends a reasoning step unless a strategy's `step_separator` says otherwise: a blank line.
STEP_SEPARATOR = "\n\n"


def split_steps(text: str, separator: str = STEP_SEPARATOR) -> list[str]:
    """The steps of a whole sample; each keeps its separator, so "".join(steps) is exactly the text."""
    return [s for s in re.split(f"(?<={re.escape(separator)})", text) if s] or [""]


class SearchContext:
    def __init__(self, problem: Problem, prompt: str, generator: Generator, ledger: Ledger,
                 scorer: Scorer | None = None, seed: int | None = None):
        self.problem = problem
        self.prompt = prompt
        self.generator = generator
        self.ledger = ledger
        self.scorer = scorer
        self.seed = seed
        self.rng = random.Random(seed)
        self.trace: list[dict[str, Any]] = []
        #: Every trajectory produced so far, so a failure later loses none of them.
        self.produced: list[Trajectory] = []
        self._trajectories: dict[int, Trajectory] = {}
        self._node_ids = 0
        self.budget_limited = False
        #: Set when the problem is one of a batch sharing one budget (see ttc.core.shared_budget).
        self.shared_budget = None
        self.shared_key: object = None
        #: The engine's slot this problem holds (at most max_concurrent_problems run at once), if any.
        self.slot: asyncio.Semaphore | None = None
        #: Told of every recorded event with what the search has spent so far (a server streams it as
        #: progress); it must be quick and must not raise.
        self.listener: Callable[[dict[str, Any]], None] | None = None

    async def wait_without_slot(self, awaitable):
        """Await what needs other problems to make progress first (a shared budget's split) without
        holding this problem's slot, so a batch larger than the slots cannot wait on itself."""
        if self.slot is None:
            return await awaitable
        self.slot.release()
        try:
            return await awaitable
        finally:
            await self.slot.acquire()

    # ---- tracing -------------------------------------------------------------------------------
    def record(self, event: str, **data: Any) -> None:
        self.trace.append({"event": event, **data})
        if self.listener is not None:
            usage = self.ledger.usage
            self.listener({"event": event, "generated_tokens": usage.generated_tokens,
                           "verifier_tokens": usage.verifier_tokens, "requests": usage.requests})

    # ---- generation ----------------------------------------------------------------------------
    def next_node_id(self) -> int:
        self._node_ids += 1
        return self._node_ids

    def _affinity(self, prompt: str) -> str | None:
        return self.prompt if prompt.startswith(self.prompt) else None

    async def generate(self, requests: Sequence[GenerationRequest], *, keep: bool = True
                       ) -> list[GenerationResult | None]:
        """Send the affordable part of `requests` as one backend batch.

        Each request is capped by the ledger first (fewer samples or fewer
        tokens); a request that cannot be afforded at all gets None.
        """
        planned: list[tuple[int, GenerationRequest, Reservation]] = []
        # Counted together, before any reservation (a remote tokenizer is a round trip each).
        counts = (await asyncio.gather(*(self.generator.acount_tokens(r.prompt) for r in requests))
                  if self.ledger.needs_prompt_counts else [0] * len(requests))
        for i, (req, prompt_tokens) in enumerate(zip(requests, counts)):
            params = self.ledger.cap(req.params, prompt_tokens)
            if params is None:
                self.budget_limited = True
                continue
            if params != req.params:
                self.budget_limited = True
            if params != req.params or (req.affinity is None and req.prompt.startswith(self.prompt)):
                req = GenerationRequest(req.prompt, params, req.affinity or self._affinity(req.prompt))
            planned.append((i, req, self.ledger.reserve(params, prompt_tokens)))
        out: list[GenerationResult | None] = [None] * len(requests)
        if not planned:
            return out
        try:
            call = self.generator.generate([req for _, req, _ in planned])
            timeout = self.ledger.seconds_left()
            results = await (asyncio.wait_for(call, timeout) if timeout is not None else call)
        except asyncio.TimeoutError:  # cut off by the seconds cap: what they computed is lost
            self.budget_limited = True
            self.record("time_budget_exhausted", pending_requests=len(planned))
            for _, _, r in planned:
                self.ledger.lose(r)
            return out
        except BaseException as exc:  # failed or cancelled: lost too, with what the backend lost retrying
            for _, _, r in planned:
                self.ledger.lose(r)
            if isinstance(exc, BackendError):
                self.ledger.usage.lost_requests += exc.lost_requests
                self.ledger.usage.lost_tokens += exc.lost_tokens
            raise
        for (i, _, r), result in zip(planned, results):
            self.ledger.settle(r, result)
            out[i] = result
            if keep:  # kept at once, so a later failure loses nothing paid for
                for c in result.completions:
                    self._trajectories[id(c)] = self._make_trajectory(c)
        return out

    async def sample(self, params: SamplingParams, prefix: str = "") -> list[Trajectory]:
        """`params.n` independent samples of the problem (as one request, so they share prefill)."""
        (result,) = await self.generate([GenerationRequest(self.prompt + prefix, params)])
        if result is None:
            return []
        return [self.trajectory(c) for c in result.completions]

    def trajectory(self, completion: Completion) -> Trajectory:
        """The trajectory of a completion this context returned (built once, when it arrived)."""
        t = self._trajectories.get(id(completion))
        return t if t is not None else self._make_trajectory(completion)

    def _make_trajectory(self, completion: Completion) -> Trajectory:
        t = Trajectory(
            steps=split_steps(completion.text),
            num_tokens=completion.num_tokens,
            finish_reason=completion.finish_reason,
            token_logprobs=completion.token_logprobs,
        )
        return self.keep(t)

    def keep(self, t: Trajectory) -> Trajectory:
        """Extract the answer, judge it when the reference is known, and record the trajectory."""
        if is_code_problem(self.problem):
            t.answer = extract_program(t.text, self.problem)  # judged by running it, after the search
        else:
            t.answer = extract_answer(t.text)
        if self.problem.reference is not None and not is_code_problem(self.problem):
            t.correct = t.answer is not None and answers_match(t.answer, self.problem.reference)
        self.produced.append(t)
        return t

    async def offload(self, fn, *args):
        """Run slow CPU-side work (answer equivalence checks) off the event loop, so the
        requests of other problems keep flowing to the backend meanwhile."""
        return await asyncio.to_thread(fn, *args)

    # ---- scoring -------------------------------------------------------------------------------
    async def score(self, trajectories: Sequence[Trajectory], *, final_only: bool = False
                    ) -> list[list[float]] | None:
        """Per-step scores from the scorer, or None when a cap cannot pay for them.

        Like generation, a score call is reserved against the caps before it is sent (its verifier
        tokens and their FLOPs, from the scorer's upper-bound estimate), runs within what is left
        of the seconds cap, and is charged what it really cost, with the backend requests it made.
        `final_only` asks for each whole trajectory's score alone (one-element rows): all that
        aggregation "last" reads, and for a judge that pays per step, far cheaper.
        """
        if self.scorer is None:
            raise RuntimeError("this strategy needs a scorer, but none was configured")
        budget, params = self.ledger.budget, self.scorer.num_parameters
        # Estimated only under a cap that needs it: for a scorer on remote replicas it is a round trip.
        capped = budget.verifier_tokens is not None or (budget.flops is not None and params)
        estimate = self.scorer.aestimate_final_tokens if final_only else self.scorer.aestimate_tokens
        cost = await estimate(self.problem, trajectories) if capped else 0
        reservation = self.ledger.reserve_verifier(cost, params)
        if reservation is None:
            self.budget_limited = True
            self.record("verifier_budget_exhausted", needed=cost, left=self.ledger.verifier_left())
            return None
        try:
            call = (self.scorer.score_final if final_only else self.scorer.score)(self.problem, trajectories)
            timeout = self.ledger.seconds_left()
            result = await (asyncio.wait_for(call, timeout) if timeout is not None else call)
        except asyncio.TimeoutError:
            self.ledger.lose(reservation)
            self.budget_limited = True
            self.record("time_budget_exhausted", pending_scores=len(trajectories))
            return None
        except BaseException as exc:
            self.ledger.lose(reservation)
            if isinstance(exc, BackendError):  # what the scorer's backend lost retrying before it failed
                self.ledger.usage.lost_requests += exc.lost_requests
                self.ledger.usage.lost_tokens += exc.lost_tokens
            raise
        self.ledger.usage.lost_requests += result.lost_requests
        self.ledger.usage.lost_tokens += result.lost_tokens
        self.ledger.settle_verifier(reservation, result.verifier_tokens, requests=result.requests,
                                    num_parameters=params)
        for t, s in zip(trajectories, result.step_scores):
            t.step_scores = list(s)
        return result.step_scores
