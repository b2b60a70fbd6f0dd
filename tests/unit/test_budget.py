import asyncio
import math

import pytest

from ttc.core.budget import Budget, Ledger
from ttc.core.errors import BudgetError, ConfigError
from ttc.core.types import Completion, GenerationResult, SamplingParams


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def result(*token_counts, prompt=10, cached=0):
    return GenerationResult([Completion("x", n, "stop") for n in token_counts], prompt, cached)


@pytest.mark.parametrize("value, expected", [
    (100, Budget(generated_tokens=100)),
    (100.0, Budget(generated_tokens=100)),
    ({"generated_tokens": 5, "seconds": 2.5}, Budget(generated_tokens=5, seconds=2.5)),
    (Budget(flops=1e9), Budget(flops=1e9)),
    (None, Budget()),
])
def test_budget_coerce_accepts_user_forms(value, expected):
    assert Budget.coerce(value) == expected


@pytest.mark.parametrize("value, fragment", [
    (0, "budget.generated_tokens must be positive, got 0"),
    (-3, "got -3"),
    (True, "got True"),
    ("100", "got '100'"),
    ({"tokens": 5}, "unknown budget field(s) ['tokens']"),
    ({"seconds": float("nan")}, "budget.seconds must be a number"),
])
def test_bad_budgets_name_field_and_value(value, fragment):
    with pytest.raises(BudgetError) as info:
        Budget.coerce(value)
    assert fragment in str(info.value)


def test_cap_prefers_fewer_full_samples_then_shortens_the_last():
    ledger = Ledger(Budget(generated_tokens=1000))
    p = SamplingParams(n=8, max_tokens=256)
    assert ledger.cap(p) == p.replace(n=3)
    r = ledger.reserve(p.replace(n=3))
    assert ledger.cap(p) == p.replace(n=1, max_tokens=232)
    ledger.settle(r, result(256, 256, 256))
    assert ledger.cap(p) == p.replace(n=1, max_tokens=232)
    ledger.settle(ledger.reserve(p.replace(n=1, max_tokens=232)), result(232))
    assert ledger.cap(p) is None and ledger.exhausted()


def test_reservations_count_in_flight_requests():
    ledger = Ledger(Budget(generated_tokens=100))
    p = SamplingParams(n=1, max_tokens=60)
    r = ledger.reserve(ledger.cap(p))
    assert ledger.cap(p) == p.replace(max_tokens=40)  # only 40 left while the first is in flight
    ledger.settle(r, result(10))  # the first used only 10 of its 60
    assert ledger.cap(p) == p


def test_prompt_cap_counts_the_prompt_once_per_sequence():
    ledger = Ledger(Budget(prompt_tokens=100))
    assert ledger.needs_prompt_counts
    p = SamplingParams(n=2, max_tokens=10)
    assert ledger.cap(p, prompt_tokens=40) == p  # 2 x 40 fits in 100
    assert ledger.cap(p.replace(n=3), prompt_tokens=40) == p  # 3 x 40 does not: one fewer sample
    r = ledger.reserve(p, 40)
    assert r.prompt_tokens == 80
    ledger.settle(r, result(10, 10, prompt=80))
    assert ledger.cap(p, prompt_tokens=11) == p.replace(n=1)  # 20 left
    assert ledger.cap(p, prompt_tokens=21) is None
    assert ledger.cap(p, prompt_tokens=10) == p


def test_flops_cap_limits_tokens_and_cached_tokens_are_free():
    ledger = Ledger(Budget(flops=2 * 1000 * 300), num_parameters=1000)  # 300 tokens of compute
    p = SamplingParams(n=4, max_tokens=100)
    assert ledger.cap(p, prompt_tokens=50) == p.replace(n=2)  # each sequence: its prompt and its tokens
    assert ledger.cap(p, prompt_tokens=100) == p.replace(n=1)
    assert ledger.cap(p, prompt_tokens=250) == p.replace(n=1, max_tokens=50)
    ledger.settle(ledger.reserve(p.replace(n=1), 100), result(50, prompt=100, cached=60))
    assert ledger.usage.flops == 2 * 1000 * (50 + 100 - 60)


def test_flops_cap_needs_a_parameter_count():
    with pytest.raises(ConfigError, match="budget.flops"):
        Ledger(Budget(flops=1e9), num_parameters=None)


def test_seconds_cap_stops_new_requests():
    clock = Clock()
    ledger = Ledger(Budget(seconds=5), clock=clock)
    p = SamplingParams()
    assert ledger.cap(p) == p
    clock.t = 5.0
    assert ledger.cap(p) is None and ledger.exhausted()
    assert ledger.finish().wall_s == 5.0


def test_verifier_tokens_and_usage_sum():
    ledger = Ledger(Budget(verifier_tokens=100), num_parameters=10)
    r = ledger.reserve_verifier(40, 7)
    assert ledger.verifier_left() == 60  # reserved before the call is sent
    ledger.settle_verifier(r, 40, requests=1, num_parameters=7)
    assert ledger.verifier_left() == 60 and ledger.usage.flops == 2 * 7 * 40 and ledger.usage.requests == 1
    total = ledger.usage + ledger.usage
    assert total.verifier_tokens == 80


def test_verifier_reservations_are_hard_for_tokens_and_flops():
    ledger = Ledger(Budget(verifier_tokens=100), num_parameters=10)
    first = ledger.reserve_verifier(60, None)
    assert first is not None and ledger.reserve_verifier(41, None) is None  # in flight counts
    ledger.release(first)
    assert ledger.reserve_verifier(100, None) is not None
    flops = Ledger(Budget(flops=1000), num_parameters=10)
    assert flops.reserve_verifier(101, 5) is None  # 2 x 5 x 101 FLOPs > 1000
    assert flops.reserve_verifier(100, 5) is not None and flops.reserve_verifier(1, 5) is None
