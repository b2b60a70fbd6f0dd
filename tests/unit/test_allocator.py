"""The allocator: fitting on synthetic outcome tables, prediction, files, and `auto` on the fakes."""
import json

import pytest
import yaml

from ttc import allocator as A
from ttc.calibrate import calibrate, tokens_to_reach
from ttc.engine import Engine
from ttc.errors import BudgetError, ConfigError
from ttc.recipe import load_recipe
from ttc.testing import FakeGenerator, answer_script

CONFIGS = [A.ConfigChoice(label="cheap", strategy="best_of_n", options={"selection": "majority"}),
           A.ConfigChoice(label="search", strategy="beam_search", options={"beam_width": 2})]


def synthetic(n_per_group=10):
    """Easy prompts (probe agreement 1.0) are solved best by `cheap`; hard ones (0.25) by `search`."""
    feats, outcomes = {}, []
    groups = {"easy": (1.0, {"cheap": 0.9, "search": 0.7}), "mid": (0.5, {"cheap": 0.5, "search": 0.5}),
              "hard": (0.25, {"cheap": 0.1, "search": 0.6})}
    for g, (agreement, acc) in groups.items():
        for i in range(n_per_group):
            pid = f"{g}-{i}"
            feats[pid] = A.ProbeFeatures(agreement, 1.0, None, 50.0)
            for budget, scale in ((256, 0.5), (1024, 1.0)):
                for cfg, a in acc.items():
                    # exactly round(a * scale * n) of the group are correct
                    correct = i < round(a * scale * n_per_group)
                    outcomes.append(A.Outcome(pid, cfg, budget, correct, budget * (0.9 if cfg == "cheap" else 1.0)))
    return feats, outcomes


def test_fit_recovers_the_known_optimum_per_bin():
    feats, outcomes = synthetic()
    model = A.fit(feats, outcomes, CONFIGS, n_bins=3, probe_samples=4, shrinkage=0)
    assert len(model.bins) == 3 and [b.problems for b in model.bins] == [10, 10, 10]
    hard, mid, easy = model.bins
    assert hard.best == {"256": "search", "1024": "search"}
    assert easy.best == {"256": "cheap", "1024": "cheap"}
    assert mid.best["1024"] == "cheap"  # equal accuracy: the cheaper configuration wins
    assert hard.accuracy["search"]["1024"] == pytest.approx(0.6)
    assert model.choose(A.ProbeFeatures(0.25, 1, None, 1), 1024).label == "search"
    assert model.choose(A.ProbeFeatures(1.0, 1, None, 1), 1024).label == "cheap"
    assert model.choose(A.ProbeFeatures(0.25, 1, None, 1), 1024, allowed=["cheap"]).label == "cheap"


def test_shrinkage_keeps_a_small_bin_from_following_noise():
    # 200 problems: "a" beats "b" by 20 points overall; in a 4-problem bin "b" wins 3-2 by luck.
    feats, outcomes = {}, []
    for i in range(200):
        small = i < 4
        pid = f"p{i}"
        feats[pid] = A.ProbeFeatures(1.0 if small else 0.25, 1, None, 1)
        a_ok = (i % 10) < 6 if not small else i < 2
        b_ok = (i % 10) < 4 if not small else i < 3
        outcomes += [A.Outcome(pid, "a", 512, a_ok, 500.0), A.Outcome(pid, "b", 512, b_ok, 500.0)]
    configs = [A.ConfigChoice(label="a", strategy="best_of_n"), A.ConfigChoice(label="b", strategy="best_of_n")]
    easy = A.ProbeFeatures(1.0, 1, None, 1)
    assert A.fit(feats, outcomes, configs, n_bins=2, probe_samples=4, shrinkage=0).choose(easy, 512).label == "b"
    assert A.fit(feats, outcomes, configs, n_bins=2, probe_samples=4, shrinkage=20).choose(easy, 512).label == "a"


def test_accuracy_interpolates_in_log_budget_and_refuses_unaffordable_budgets():
    feats, outcomes = synthetic()
    model = A.fit(feats, outcomes, CONFIGS, probe_samples=4, shrinkage=0)
    # hard bin, search: 0.3 at 256 and 0.6 at 1024 -> 0.45 at 512 (half-way in log2)
    assert model.accuracy_at(0, "search", 512) == pytest.approx(0.45)
    assert model.accuracy_at(0, "search", 4096) == pytest.approx(0.6)
    assert model.accuracy_at(0, "search", 100) == float("-inf")


def test_allocator_files_round_trip_by_path_and_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TTC_HOME", str(tmp_path))
    feats, outcomes = synthetic()
    model = A.fit(feats, outcomes, CONFIGS, probe_samples=4, data={"dataset": "synthetic"})
    A.save(model, A.allocator_path("mine"))
    assert (tmp_path / "allocators" / "mine.json").exists()
    assert A.load("mine") == model
    assert A.load(str(tmp_path / "allocators" / "mine.json")).data == {"dataset": "synthetic"}
    bad = json.loads((tmp_path / "allocators" / "mine.json").read_text())
    bad["version"] = 99
    (tmp_path / "old.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="version 99"):
        A.load(str(tmp_path / "old.json"))
    with pytest.raises(ConfigError, match="run `ttc calibrate` first"):
        A.load("nothing-here")


def test_tokens_to_reach_by_hand():
    curve = [{"tokens": 100, "accuracy": 0.2}, {"tokens": 400, "accuracy": 0.6}]
    assert tokens_to_reach(curve, 0.2) == 100
    assert tokens_to_reach(curve, 0.4) == pytest.approx(200)  # half-way in log2 between 100 and 400
    assert tokens_to_reach(curve, 0.7) is None


def fake_engine(answers, **kw):
    return Engine(generator=FakeGenerator(answer_script(answers), **kw))


def test_auto_charges_the_probe_and_keeps_its_samples():
    with fake_engine({"42": 0.5, "41": 0.3, "7": 0.2}, seed=1) as e:
        sol = e.solve("q", 2000, "auto", max_tokens=100, probe_samples=4, reference="42")
    assert sol.metrics["decision"] == "run" and sol.metrics["config"] == "best_of_n[majority]"
    probe_event = next(ev for ev in sol.trace if ev["event"] == "probe")
    assert probe_event["samples"] == 4
    assert len(sol.candidates) == 4 + 2000 // 100 - 1  # the probe + the rest of the budget
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


def test_calibrate_end_to_end_on_fakes(tmp_path, monkeypatch):
    monkeypatch.setenv("TTC_HOME", str(tmp_path / "home"))
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cal", "generator": {"backend": "fake", "options": {"answers": {"3": 0.5, "4": 0.3, "5": 0.2}}},
        "dataset": {"source": "arithmetic", "levels": ["add1"], "per_level": 12},
        "sampling": {"max_tokens": 32},
        "strategy": [{"name": "best_of_n", "label": "majority"}, {"name": "repeated_sampling", "label": "rs"}],
        "budget": [32, 128], "output": str(tmp_path / "out"),
    }))
    report = calibrate(load_recipe(path), probe_samples=2, run_evaluation=True, folds=3, progress=False)
    assert (tmp_path / "home" / "allocators" / "cal.json").exists()
    ev = report["evaluation"]
    assert ev["problems"] == 12 and [p["budget"] for p in ev["auto"]] == [32, 128]
    assert ev["best_of_n_majority"]["config"] == "majority"
    assert "compute_ratio" in ev
    model = A.load("cal")
    assert model.data["problems"] == 12 and model.budgets == [32, 128]
    # A second run resumes: nothing new is solved.
    before = (tmp_path / "out" / "results.jsonl").read_text()
    calibrate(load_recipe(path), probe_samples=2, progress=False)
    assert (tmp_path / "out" / "results.jsonl").read_text() == before


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
    assert all(s.metrics["decision"] == "run" and s.metrics["pool_share"] > 0 for s in hard)
    # What the probes did not spend is split between the hard prompts: far more than 1000 each.
    probes = sum(s.usage.generated_tokens for s in easy) + sum(c.num_tokens for s in hard for c in s.candidates[:4])
    assert sum(s.metrics["pool_share"] for s in hard) == 5000 - probes
    assert all(s.metrics["pool_share"] > 2000 and len(s.candidates) == 4 + s.metrics["pool_share"] // 100
               for s in hard)


def test_pooled_batch_rejects_a_total_below_the_probes():
    import asyncio

    with fake_engine({"1": 1.0}) as e, pytest.raises(BudgetError, match="cannot pay for 3 probes"):
        asyncio.run(e.asolve_pooled(["a", "b", "c"], 500, max_tokens=100, probe_samples=4))


def test_bin_edges_follow_quantiles_over_few_distinct_values():
    values = [0.25] * 10 + [0.5] * 5 + [0.75] * 3 + [1.0] * 2
    assert A.quantile_edges(values, 3) == [0.5, 0.75]
    assert A.quantile_edges([0.5] * 7, 3) == []  # one value: one bin
    assert A.quantile_edges([0.25, 1.0], 4) == [1.0]


def test_allocator_can_choose_to_stop_after_the_probe():
    feats = {f"p{i}": A.ProbeFeatures(1.0 if i < 5 else 0.25, 1, None, 1) for i in range(10)}
    outcomes = []
    for pid, f in feats.items():
        easy = f.agreement == 1.0
        outcomes.append(A.Outcome(pid, "cheap", 1024, easy, 1000.0))
        outcomes.append(A.Outcome(pid, A.PROBE_ONLY.label, 1024, easy, 200.0))  # as good, far cheaper
    model = A.fit(feats, outcomes, [CONFIGS[0], A.PROBE_ONLY], n_bins=2, probe_samples=4)
    assert model.choose(A.ProbeFeatures(1.0, 1, None, 1), 1024).label == "probe_only"
    assert model.bins[1].best == {"1024": "probe_only"}
