"""Budgets (what a user allows) and the ledger (what was spent).

One meaning for "budget" everywhere: an int is a cap on *generated policy
tokens*. `Budget(...)` can add caps on prompt tokens, verifier tokens, FLOPs and
wall seconds. The ledger caps every request *before* it is sent, counting what
in-flight requests may still spend, so no strategy can overspend, however many
requests it keeps in flight.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from ttc.core.errors import BudgetError, ConfigError
from ttc.core.types import GenerationResult, SamplingParams, Usage

_CAPS = ("generated_tokens", "prompt_tokens", "verifier_tokens", "flops", "seconds")


@dataclass(frozen=True)
class Budget:
    """Caps on what one solve may spend; None means "no cap on this"."""

    generated_tokens: int | None = None
    prompt_tokens: int | None = None
    verifier_tokens: int | None = None
    flops: float | None = None
    seconds: float | None = None

    def __post_init__(self):
        problems = []
        for name in _CAPS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                problems.append(f"budget.{name} must be a number, got {value!r}")
            elif value <= 0:
                problems.append(f"budget.{name} must be positive, got {value!r}")
        if problems:
            raise BudgetError("; ".join(problems))

    @classmethod
    def coerce(cls, value: "Budget | int | dict | None") -> "Budget":
        """Accept what users pass: an int (generated tokens), a dict of caps, or a Budget."""
        if isinstance(value, Budget):
            return value
        if value is None:
            return cls()
        if isinstance(value, bool):
            raise BudgetError(f"budget must be a positive int of generated tokens or a Budget, got {value!r}")
        if isinstance(value, int):
            return cls(generated_tokens=value)
        if isinstance(value, float) and value.is_integer():
            return cls(generated_tokens=int(value))
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(_CAPS))
            if unknown:
                raise BudgetError(f"unknown budget field(s) {unknown}; valid fields are {list(_CAPS)}")
            return cls(**value)
        raise BudgetError(f"budget must be a positive int of generated tokens or a Budget, got {value!r}")

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in _CAPS if getattr(self, name) is not None}


@dataclass
class Reservation:
    """What the ledger set aside for one request until its result is settled."""

    generated_tokens: int
    prompt_tokens: int
    flops: float
    verifier_tokens: int = 0


class Ledger:
    """Charges every backend call against a Budget, and caps requests before they are sent.

    All methods are synchronous and the engine runs on one event loop, so a
    reservation is taken atomically before the request is awaited.
    """

    def __init__(self, budget: Budget, *, num_parameters: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if budget.flops is not None and not num_parameters:
            raise ConfigError(
                f"budget.flops={budget.flops!r} needs the model's parameter count, which this generator does not report"
            )
        self.budget = budget
        self.num_parameters = num_parameters
        self.usage = Usage()
        self._clock = clock
        self._start = clock()
        self._reserved = Reservation(0, 0, 0.0, 0)

    # ---- what is left -------------------------------------------------------------------------
    def _left(self, cap, spent, reserved):
        return None if cap is None else cap - spent - reserved

    def generated_left(self) -> int | None:
        return self._left(self.budget.generated_tokens, self.usage.generated_tokens, self._reserved.generated_tokens)

    def seconds_left(self) -> float | None:
        if self.budget.seconds is None:
            return None
        return self.budget.seconds - (self._clock() - self._start)

    def exhausted(self) -> bool:
        """True when no further generation request can be afforded."""
        left = self.generated_left()
        if left is not None and left <= 0:
            return True
        secs = self.seconds_left()
        return secs is not None and secs <= 0

    @property
    def needs_prompt_counts(self) -> bool:
        """Prompt lengths must be known before sending only when a cap depends on them."""
        return self.budget.prompt_tokens is not None or self.budget.flops is not None

    # ---- capping and charging -----------------------------------------------------------------
    def cap(self, params: SamplingParams, prompt_tokens: int = 0) -> SamplingParams | None:
        """The largest request within every cap, or None when not even one token fits.

        `prompt_tokens` is the prompt's length; each of the n sequences processes it, so a
        request is charged n times the prompt (less what the backend serves from its cache).
        Fewer samples at full length are preferred to many truncated ones; only
        when one full-length sample no longer fits is the last sample shortened.
        """
        secs = self.seconds_left()
        if secs is not None and secs <= 0:
            return None
        n = params.n
        prompt_left = self._left(self.budget.prompt_tokens, self.usage.prompt_tokens, self._reserved.prompt_tokens)
        if prompt_left is not None and prompt_tokens > 0:
            n = min(n, prompt_left // prompt_tokens)
            if n < 1:
                return None
        # Tokens one more sequence may generate, and how many full-length sequences fit.
        token_allowance = self.generated_left()
        full = n if token_allowance is None else min(n, token_allowance // params.max_tokens)
        if self.budget.flops is not None:
            tokens_by_flops = math.floor(self._flops_left() / (2 * self.num_parameters))
            full = min(full, tokens_by_flops // (prompt_tokens + params.max_tokens))
            by_flops = tokens_by_flops - prompt_tokens
            token_allowance = by_flops if token_allowance is None else min(token_allowance, by_flops)
        if full >= 1:
            return params if full == params.n else params.replace(n=full)
        if token_allowance is None:
            return params
        if token_allowance <= 0:
            return None
        return params.replace(n=1, max_tokens=min(params.max_tokens, token_allowance))

    def reserve(self, params: SamplingParams, prompt_tokens: int = 0) -> Reservation:
        """Set aside what a request may cost at most: n x max_tokens generated, and its prompt once
        per sequence (`prompt_tokens` is the prompt's length)."""
        tokens = params.n * params.max_tokens
        prompt = params.n * prompt_tokens
        flops = 2.0 * (self.num_parameters or 0) * (prompt + tokens)
        r = Reservation(tokens, prompt, flops)
        self._reserved.generated_tokens += r.generated_tokens
        self._reserved.prompt_tokens += r.prompt_tokens
        self._reserved.flops += r.flops
        return r

    def release(self, r: Reservation) -> None:
        self._reserved.generated_tokens -= r.generated_tokens
        self._reserved.prompt_tokens -= r.prompt_tokens
        self._reserved.flops -= r.flops
        self._reserved.verifier_tokens -= r.verifier_tokens

    def lose(self, r: Reservation, *, requests: int = 1, tokens: int | None = None) -> None:
        """Release a request that brought nothing back (failed, cancelled) and report what it may have
        used: `tokens` when the backend said, else its reservation (prompt plus n x max_tokens)."""
        self.release(r)
        self.usage.lost_requests += requests
        self.usage.lost_tokens += (r.generated_tokens + r.prompt_tokens + r.verifier_tokens) if tokens is None else tokens

    def settle(self, r: Reservation, result: GenerationResult) -> None:
        """Release the reservation and charge what the request really spent."""
        self.release(r)
        self.usage.lost_requests += result.lost_requests
        self.usage.lost_tokens += result.lost_tokens
        generated = sum(c.num_tokens for c in result.completions)
        u = self.usage
        u.generated_tokens += generated
        u.prompt_tokens += result.prompt_tokens
        u.cached_prompt_tokens += result.cached_prompt_tokens
        u.requests += 1
        # Cached prompt tokens are not recomputed, so they cost no FLOPs.
        computed = generated + result.prompt_tokens - result.cached_prompt_tokens
        u.flops += 2.0 * (self.num_parameters or 0) * computed

    def verifier_left(self) -> int | None:
        return self._left(self.budget.verifier_tokens, self.usage.verifier_tokens, self._reserved.verifier_tokens)

    def _flops_left(self) -> float | None:
        return None if self.budget.flops is None else self.budget.flops - self.usage.flops - self._reserved.flops

    def reserve_verifier(self, tokens: int, num_parameters: int | None) -> Reservation | None:
        """Set aside a score call's verifier tokens and their FLOPs before it is sent, exactly as
        `reserve` does for generation; None when a cap (verifier tokens, FLOPs, seconds) cannot pay.
        `tokens` is the scorer's estimate, which the protocol asks to be an upper bound."""
        secs = self.seconds_left()
        if secs is not None and secs <= 0:
            return None
        left = self.verifier_left()
        flops = 2.0 * (num_parameters or 0) * tokens
        flops_left = self._flops_left()
        if (left is not None and tokens > left) or (flops_left is not None and flops > flops_left):
            return None
        r = Reservation(0, 0, flops, tokens)
        self._reserved.flops += flops
        self._reserved.verifier_tokens += tokens
        return r

    def settle_verifier(self, r: Reservation, tokens: int, *, requests: int = 0,
                        num_parameters: int | None = None) -> None:
        """Release a score call's reservation and charge what it really cost."""
        self.release(r)
        self.usage.verifier_tokens += tokens
        self.usage.requests += requests
        if num_parameters:
            self.usage.flops += 2.0 * num_parameters * tokens

    def finish(self) -> Usage:
        self.usage.wall_s = self._clock() - self._start
        return self.usage
