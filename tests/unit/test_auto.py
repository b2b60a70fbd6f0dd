"""`auto` on the fakes: the probe, the allocator's decisions, best-of-N in rounds, batches."""
import pytest

from allocator_cases import CONFIGS, fake_engine, hopeless_and_medium, synthetic, weighted_allocator
from strategies.auto import allocator as A
from ttc.engine import Engine
from ttc.core.errors import BudgetError, ConfigError
from ttc.testing import FakeGenerator


def test_auto_charges_the_probe_and_keeps_its_samples():
    with fake_engine({"42": 0.5, "41": 0.3, "7": 0.2}, seed=1) as e:
        sol = e.solve("q", 2000, "auto", max_tokens=100, probe_samples=4, reference="42")
    assert sol.metrics["decision"] == "run" and sol.metrics["config"] == "best_of_n[majority]"
    probe_event = next(ev for ev in sol.trace if ev["event"] == "probe")
    assert probe_event["samples"] == 4
    # The probe, the rest of the budget at full length, and more rounds with what short samples left.
    assert len(sol.candidates) >= 4 + 2000 // 100 - 1 and sol.usage.generated_tokens <= 2000
    assert sol.usage.generated_tokens == sum(c.num_tokens for c in sol.candidates) <= 2000
    assert sum(sol.metrics["votes"].values()) == sum(c.answer is not None for c in sol.candidates)


def test_auto_stops_after_a_confident_probe():
    with fake_engine({"42": 1.0}) as e:
        sol = e.solve("q", 2000, "auto", max_tokens=100)
    assert sol.metrics["decision"] == "stop_after_probe" and len(sol.candidates) == 4
    assert sol.usage.generated_tokens < 2000 and sol.answer == "42"


def test_auto_refuses_a_budget_below_its_probe():
    with fake_engine({"42": 1.0}) as e, pytest.raises(BudgetError, match="cannot pay for the probe"):
        e.solve("q", 300, "auto", max_tokens=100, probe_samples=4)


def test_auto_follows_a_fitted_allocator(tmp_path, monkeypatch):
    monkeypatch.setenv("TTC_HOME", str(tmp_path))
    feats, outcomes = synthetic()
    A.save(A.fit(feats, outcomes, CONFIGS, probe_samples=4), A.allocator_path("syn"))
    from ttc.testing import FakeScorer

    def all_different(prompt, rng):  # every sample a new answer: probe agreement 1/4, a hard prompt
        return f"step one\n\nThe answer is \\boxed{{{rng.randrange(10**9)}}}"

    with Engine(generator=FakeGenerator(all_different), scorer=FakeScorer()) as e:
        sol = e.solve("q", 4000, "auto", max_tokens=100, allocator="syn", confident_agreement=0.9)
        assert sol.metrics["bin"] == 0 and sol.metrics["config"] == "search"  # a hard prompt: searched
        assert any(ev["event"] == "step" for ev in sol.trace)
    with Engine(generator=FakeGenerator(all_different)) as e:
        sol = e.solve("q", 4000, "auto", max_tokens=100, allocator="syn", confident_agreement=0.9)
        assert sol.metrics["bin"] == 0 and sol.metrics["config"] == "cheap"  # no verifier here: the search is not allowed


def test_pooled_batch_moves_compute_from_easy_to_hard_prompts():
    def script(prompt, rng):
        answer = "7" if "easy" in prompt else str(rng.randrange(10**6))
        return f"some words here\n\nThe answer is \\boxed{{{answer}}}"

    problems = ["easy one", "easy two", "easy three", "hard one", "hard two"]
    with Engine(generator=FakeGenerator(script)) as e:
        import asyncio

        sols = asyncio.run(e.asolve_pooled(problems, 5 * 1000, max_tokens=100, probe_samples=4))
    spent = sum(s.usage.generated_tokens for s in sols)
    assert spent <= 5 * 1000
    easy, hard = sols[:3], sols[3:]
    assert all(s.metrics["decision"] == "stop_after_probe" and len(s.candidates) == 4 for s in easy)
    assert all(s.metrics["decision"] == "run" and s.metrics["budget_share"] > 0 for s in hard)
    # What the probes did not spend is split between the hard prompts: far more than 1000 each.
    probes = sum(s.usage.generated_tokens for s in easy) + sum(c.num_tokens for s in hard for c in s.candidates[:4])
    assert sum(s.metrics["budget_share"] for s in hard) == 5000 - probes
    assert all(s.metrics["budget_share"] > 2000 and len(s.candidates) >= 4 + s.metrics["budget_share"] // 100
               for s in hard)


def test_pooled_batch_rejects_a_total_below_the_probes():
    import asyncio

    with fake_engine({"1": 1.0}) as e, pytest.raises(BudgetError, match="cannot pay for 3 probes"):
        asyncio.run(e.asolve_pooled(["a", "b", "c"], 500, max_tokens=100, probe_samples=4))


def test_auto_stops_where_its_allocator_says_compute_does_not_pay(tmp_path, monkeypatch):
    monkeypatch.setenv("TTC_HOME", str(tmp_path))
    feats, outcomes = hopeless_and_medium()
    model = A.fit(feats, outcomes, [CONFIGS[0], A.PROBE_ONLY], n_bins=2, probe_samples=4, shrinkage=0)
    A.save(model.model_copy(update={"price_per_1k_tokens": 0.02}), A.allocator_path("priced"))

    def all_different(prompt, rng):  # agreement 1/4: the hopeless bin
        return f"step\n\nThe answer is \\boxed{{{rng.randrange(10**9)}}}"

    with Engine(generator=FakeGenerator(all_different)) as e:
        sol = e.solve("q", 2048, "auto", max_tokens=128, allocator="priced")
        assert sol.metrics["decision"] == "stop_after_probe" and sol.metrics["reason"] == "allocator"
        assert len(sol.candidates) == 4
    calls = iter(range(10**6))

    def three_of_four(prompt, rng):  # agreement 3/4: the medium bin, where 4x the tokens buy 40 points
        return f"step\n\nThe answer is \\boxed{{{9 if next(calls) % 4 == 3 else 7}}}"

    with Engine(generator=FakeGenerator(three_of_four)) as e:
        sol = e.solve("q", 2048, "auto", max_tokens=128, allocator="priced")
        assert sol.metrics["decision"] == "run" and sol.metrics["sub_budget"] == 2048 - sol.candidates[0].num_tokens * 4
        assert len(sol.candidates) > 4
        # A price far above what more tokens buy here stops the same prompt.
        sol = e.solve("q", 2048, "auto", max_tokens=128, allocator="priced", price_per_1k_tokens=5.0)
        assert sol.metrics["decision"] == "stop_after_probe" and len(sol.candidates) == 4


def test_auto_stops_its_best_of_n_once_the_vote_is_settled(tmp_path, monkeypatch):
    monkeypatch.setenv("TTC_HOME", str(tmp_path))
    feats, outcomes = hopeless_and_medium()
    model = A.fit(feats, outcomes, [CONFIGS[0], A.PROBE_ONLY], n_bins=2, probe_samples=4, shrinkage=0)
    A.save(model.model_copy(update={"stop_margin": 3}), A.allocator_path("early"))
    calls = iter(range(10**6))

    def three_of_four(prompt, rng):  # 7, 7, 7, 9, 7, 7, 7, 9, ...: the probe leads 3 to 1
        return f"step\n\nThe answer is \\boxed{{{9 if next(calls) % 4 == 3 else 7}}}"

    with Engine(generator=FakeGenerator(three_of_four)) as e:
        # Margin 3: after the probe (3 to 1) one round of 4 more makes it 6 to 2; settled at 8 samples.
        sol = e.solve("q", 2048, "auto", max_tokens=128, allocator="early")
        assert sol.metrics["decision"] == "run" and sol.answer == "7"
        assert len(sol.candidates) == 8 and sol.metrics["rounds"] == 1
        assert sol.usage.generated_tokens == sum(c.num_tokens for c in sol.candidates)
        # The run's own option overrides the file's: 0 draws the whole budget at once (and then what
        # the short samples left of it), never stopping on the vote.
        sol = e.solve("q", 2048, "auto", max_tokens=128, allocator="early", stop_margin=0)
        first = next(ev for ev in sol.trace if ev["event"] == "auto")
        assert sol.metrics["rounds"] > 1 and len(sol.candidates) >= 4 + sol.metrics["sub_budget"] // 128
        assert not any(ev["event"] == "auto_early_stop" for ev in sol.trace) and first["decision"] == "run"
        assert sol.usage.generated_tokens <= 2048


def test_auto_weighs_every_sample_probe_included_when_it_picks_a_weighted_best_of_n(tmp_path, monkeypatch):
    from ttc.testing import FakeScorer

    name = weighted_allocator(tmp_path, monkeypatch)
    calls = iter(range(10**6))

    def mostly_seven(prompt, rng):  # 7, 7, 7, 9, ...: 3 to 1, not unanimous, so auto runs the best-of-N
        return f"step\n\nThe answer is \\boxed{{{9 if next(calls) % 4 == 3 else 7}}}"

    # The verifier trusts 9 far more than 7: the weighted vote must follow it over the majority.
    with Engine(generator=FakeGenerator(mostly_seven), scorer=FakeScorer(by_answer={"9": 1.0, "7": 0.01})) as e:
        sol = e.solve("q", 1024, "auto", max_tokens=128, allocator=name)
    assert sol.metrics["decision"] == "run" and sol.metrics["config"] == "cheap"
    assert sol.answer == "9" and len(sol.candidates) > 4
    assert all(c.step_scores for c in sol.candidates)  # the probe's samples were scored too
    assert sol.metrics["votes"]["9"] > sol.metrics["votes"]["7"]
    # Without a verifier the weighted choice is not allowed: the allocator stops after the probe.
    with Engine(generator=FakeGenerator(mostly_seven)) as e:
        sol = e.solve("q", 1024, "auto", max_tokens=128, allocator=name)
    assert sol.metrics["decision"] == "stop_after_probe" and sol.answer == "7"


def test_auto_probes_with_the_allocators_probe_size_unless_told(tmp_path, monkeypatch):
    name = weighted_allocator(tmp_path, monkeypatch, probe_samples=2)
    with fake_engine({"42": 1.0}) as e:
        assert len(e.solve("q", 2000, "auto", max_tokens=100, allocator=name).candidates) == 2
        assert len(e.solve("q", 2000, "auto", max_tokens=100, allocator=name, probe_samples=3).candidates) == 3


def test_auto_without_an_allocator_needs_a_generated_token_budget():
    from ttc.core.budget import Budget

    with fake_engine({"42": 0.5, "7": 0.5}) as e, pytest.raises(ConfigError, match="give the budget as an int"):
        e.solve("q", Budget(seconds=60), "auto", max_tokens=100)


def test_auto_with_an_allocator_runs_under_a_budget_without_a_token_cap(tmp_path, monkeypatch):
    from ttc.core.budget import Budget

    name = weighted_allocator(tmp_path, monkeypatch)
    calls = iter(range(10**6))

    def mostly_seven(prompt, rng):
        return f"step\n\nThe answer is \\boxed{{{9 if next(calls) % 4 == 3 else 7}}}"

    from ttc.testing import FakeScorer

    with Engine(generator=FakeGenerator(mostly_seven), scorer=FakeScorer()) as e:
        sol = e.solve("q", Budget(seconds=60), "auto", max_tokens=128, allocator=name)
    # Its largest calibrated budget (2048) applies: the probe plus (2048 - probe tokens) // 128 more.
    assert sol.metrics["decision"] == "run" and sol.metrics["sub_budget"] == 2048 - sum(
        c.num_tokens for c in sol.candidates[:4])


@pytest.mark.parametrize("option, value, message", [
    ("stop_margin", -1, "auto.stop_margin: Input should be greater than or equal to 0, got -1"),
    ("stop_margin", "two", "auto.stop_margin: Input should be a valid integer"),
    ("price_per_1k_tokens", -0.5, "auto.price_per_1k_tokens: Input should be greater than or equal to 0, got -0.5"),
])
def test_bad_auto_options_are_refused_before_anything_is_spent(option, value, message):
    with fake_engine({"42": 1.0}) as e, pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        e.solve("q", 2000, "auto", max_tokens=100, **{option: value})


def test_auto_follows_an_allocator_handed_over_in_memory_as_it_follows_a_file(tmp_path, monkeypatch):
    import asyncio

    from ttc.core.budget import Budget, Ledger
    from ttc.core.context import SearchContext
    from ttc.core.registry import build
    from ttc.core.types import Problem

    name = weighted_allocator(tmp_path, monkeypatch, probe_samples=2)
    model = A.load(name)

    def run(auto):
        calls = iter(range(10**6))
        gen = FakeGenerator(lambda prompt, rng: f"step\n\nThe answer is \\boxed{{{7 + 2 * (next(calls) % 2)}}}")
        ctx = SearchContext(Problem("q"), "q", gen, Ledger(Budget(generated_tokens=1024)))
        auto.check(Budget(generated_tokens=1024), False)
        return asyncio.run(auto.run(ctx))

    from_file, in_memory = (run(build("strategy", "auto", {"max_tokens": 128, "allocator": name})),
                            run(build("strategy", "auto", {"max_tokens": 128}).use_allocator(model)))
    assert len(in_memory.candidates) == len(from_file.candidates) == 2  # the allocator's probe size
    # Without a verifier its only choice is to stop (the default, without an allocator, would run best-of-N).
    assert in_memory.metrics == from_file.metrics and in_memory.metrics["reason"] == "allocator"
