import asyncio
import threading

import pytest

from strategies.base import Outcome, SampledStrategyConfig, Strategy
from ttc import api
from ttc.core.budget import Budget
from ttc.engine import Engine
from ttc.core.errors import BackendError, ConfigError, SolveError
from ttc.core.registry import STRATEGIES
from ttc.testing import FakeGenerator
from ttc.core.types import GenerationRequest, Problem


class ConcurrentBurst(Strategy):
    """Test strategy: fires many requests at once, as a search step would."""

    name = "burst"
    Config = SampledStrategyConfig

    async def run(self, ctx):
        params = self.config.params(self.config.n or 4)
        reqs = [GenerationRequest(ctx.prompt + f" part {i}", params) for i in range(8)]
        results = await asyncio.gather(*(ctx.generate([r]) for r in reqs))
        cands = [ctx.trajectory(c) for (res,) in results if res is not None for c in res.completions]
        return Outcome(cands[0].answer if cands else None, cands[0] if cands else None, cands)


@pytest.fixture(autouse=True)
def burst_strategy():
    STRATEGIES.register("burst", ConcurrentBurst)
    yield
    STRATEGIES.unregister("burst")


class TrackingGenerator(FakeGenerator):
    """Counts how many generate calls overlap, to prove problems run concurrently."""

    def __init__(self, **kw):
        super().__init__(latency_s=0.05, **kw)
        self.in_flight = self.peak = 0

    async def generate(self, requests):
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().generate(requests)
        finally:
            self.in_flight -= 1


@pytest.mark.parametrize("budget", [50, 333, 1000])
def test_concurrent_requests_of_one_solve_cannot_overspend(budget):
    with Engine(generator=FakeGenerator(latency_s=0.01)) as e:
        sol = e.solve("q", budget, "burst", n=4, max_tokens=40)
    assert sol.usage.generated_tokens <= budget
    assert sol.metrics["budget_limited"] is (budget < 8 * 4 * 40)


def test_many_problems_run_concurrently_in_one_engine():
    gen = TrackingGenerator()
    with Engine(generator=gen) as e:
        sols = e.solve_many([f"problem {i}" for i in range(12)], 64 * 4, "best_of_n", max_tokens=64)
    assert len(sols) == 12 and all(s.answer for s in sols)
    assert gen.peak == 12  # every problem's request was in flight at once


def test_solve_from_many_threads_and_from_another_event_loop():
    with Engine(generator=FakeGenerator()) as e:
        out = []
        threads = [threading.Thread(target=lambda: out.append(e.solve("q", 512, max_tokens=64))) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sol = asyncio.run(e.asolve("q", 512, max_tokens=64))
    assert len(out) == 6 and sol.answer is not None


def test_backend_failure_keeps_finished_candidates_and_engine_keeps_serving():
    gen = FakeGenerator(fail_on_call=3)
    with Engine(generator=gen) as e:
        with pytest.raises(SolveError) as info:
            e.solve("q", 10_000, "burst", n=2, max_tokens=30)  # 8 concurrent requests: call 3 fails
        partial = info.value.partial
        assert partial is not None and partial.metrics["failed"]
        assert "fake backend failed on generate call 3" in str(info.value)
        # finished requests are not lost: calls 1 and 2 returned before the failure was raised
        assert partial.usage.generated_tokens == sum(c.num_tokens for c in partial.candidates)
        again = e.solve("q", 1000, max_tokens=64)  # the engine still serves
        assert again.answer is not None


def test_one_failing_problem_does_not_sink_the_batch():
    gen = FakeGenerator(fail_on_call=2)
    with Engine(generator=gen) as e:
        results = e.solve_many(["a", "b", "c"], 256, "best_of_n", max_tokens=64)
    errors = [r for r in results if isinstance(r, SolveError)]
    assert len(errors) == 1 and sum(1 for r in results if not isinstance(r, Exception)) == 2


def test_dead_owned_backend_is_rebuilt_for_the_next_solve():
    with Engine(backend="fake", backend_options={"fail_on_call": 1}) as e:
        first = e._submit(e._astart()).result() or e._generator
        first.dead = True
        with pytest.raises(SolveError):
            e.solve("q", 256, max_tokens=64)
        assert e._generator is None
        e.config.backend_options = {}
        assert e.solve("q", 256, max_tokens=64).answer is not None


@pytest.mark.parametrize("kwargs, fragment", [
    ({"prompt": ""}, "prompt must be a non-empty string, got ''"),
    ({"prompt": "   "}, "prompt must be a non-empty string"),
    ({"prompt": 5}, "prompt must be a string, got int 5"),
    ({"strategy": "nope"}, "unknown strategy 'nope'"),
    ({"budget": 0}, "budget.generated_tokens must be positive, got 0"),
    ({"budget": 10}, "budget=10 generated tokens cannot pay for one sample of max_tokens=256"),
    ({"temperature": -0.5}, "best_of_n.temperature"),
    ({"max_tokens": 0}, "best_of_n.max_tokens"),
])
def test_bad_input_gets_one_clear_message(kwargs, fragment):
    call = {"prompt": "q", "budget": 1000, "strategy": "best_of_n", **kwargs}
    with Engine(generator=FakeGenerator()) as e:
        with pytest.raises((ConfigError, ValueError)) as info:
            e.solve(call.pop("prompt"), call.pop("budget"), call.pop("strategy"), **call)
    assert fragment in str(info.value)


def test_engine_config_errors_name_fields():
    with pytest.raises(ConfigError, match="unknown backend 'vlm'.*did you mean 'vllm'"):
        Engine(backend="vlm")
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        Engine(colour="red")
    with pytest.raises(ConfigError, match="max_concurrent_problems"):
        Engine(max_concurrent_problems=0)
    with pytest.raises(ConfigError, match="unknown verifier 'prm'"):
        Engine(verifier="prm")


def test_missing_model_folder_is_a_config_error(tmp_path):
    with Engine(backend="vllm", model=str(tmp_path / "nowhere")) as e:
        with pytest.raises(ConfigError, match="no checkpoint folder with a config.json"):
            e.solve("q", 1000)


def test_solution_records_usage_trace_and_problem():
    with Engine(generator=FakeGenerator()) as e:
        sol = e.solve(Problem("q", id="p1", reference="42"), Budget(generated_tokens=640), max_tokens=64)
    d = sol.to_dict()
    assert d["id"] == "p1" and d["candidates"] >= 10 and d["usage"]["generated_tokens"] > 0
    assert sol.trace[0] == {"event": "sample", "n": 10, "max_tokens": 64}  # the first round: 10 full-length
    assert sol.usage.requests >= 2 and sol.usage.prompt_tokens > 0  # short samples leave room for more rounds


def test_api_solve_uses_given_engine():
    with Engine(generator=FakeGenerator()) as e:
        sol = api.solve("q", 512, "repeated_sampling", engine=e, max_tokens=64, reference="42")
        assert sol.strategy == "repeated_sampling" and "coverage" in sol.metrics
        sol2 = asyncio.run(api.asolve("q", 512, engine=e, max_tokens=64))
        assert sol2.strategy == "best_of_n"


def test_a_pooled_batch_larger_than_the_slots_shares_one_budget():
    """Seven problems, two slots: every probe runs, waiting problems give up their slot, and one
    budget covers the whole batch (not one per group of max_concurrent_problems)."""
    import asyncio

    from ttc.testing import answer_script

    gen = FakeGenerator(answer_script({"1": 0.5, "2": 0.5}, steps=2, words_per_step=3))
    with Engine(generator=gen, max_concurrent_problems=2) as e:
        sols = asyncio.run(asyncio.wait_for(
            e.asolve_pooled([f"q{i}" for i in range(7)], 7 * 600, max_tokens=100, probe_samples=2), 60))
    assert len(sols) == 7 and not any(isinstance(s, Exception) for s in sols)
    assert sum(s.usage.generated_tokens for s in sols) <= 7 * 600
    assert all("budget_share" in s.metrics for s in sols)  # all seven were members of the one shared budget


def test_the_generator_is_built_on_the_engines_own_thread_only():
    """vLLM's AsyncLLM binds to the loop it starts on: built from another thread, its outputs reach
    another loop and solves hang (what `ttc label` once did by asking the model's name first)."""
    from ttc.engine import Engine

    with Engine(backend="fake") as engine:
        with pytest.raises(RuntimeError, match="engine's own thread"):
            engine._get_generator()
        assert engine.model_name == "fake"  # built on the engine's thread
        assert engine.solve("q", 512).usage.generated_tokens > 0
