"""The allocator: fitting on synthetic outcome tables, prediction, files, and `auto` on the fakes."""
import json

import pytest
import yaml

from ttc import allocator as A
from ttc.calibrate import calibrate, outcomes_from_records, tokens_to_reach
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
    # auto cannot run at 32 tokens: its probe (2 x 32) costs more, so its curve starts at 128.
    assert ev["problems"] == 12 and [p["budget"] for p in ev["auto"]] == [128]
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


def test_difficulty_model_ranks_prompts_by_what_their_probes_show():
    from ttc.difficulty import fit_difficulty

    # Pass@1 falls with disagreement and with prompt length; the model must learn both directions.
    feats, targets = [], []
    for i in range(60):
        agreement = [0.25, 0.5, 0.75, 1.0][i % 4]
        prompt = 40 + 10 * (i % 3)
        feats.append(A.ProbeFeatures(agreement, 1.0, None, 80.0, distinct=1.25 - agreement, prompt_tokens=prompt))
        targets.append(min(1.0, max(0.0, agreement - 0.005 * (prompt - 40))))
    model = fit_difficulty(feats, targets)
    p = model.predict
    assert p(A.ProbeFeatures(1.0, 1, None, 80, distinct=0.25, prompt_tokens=40)) > \
        p(A.ProbeFeatures(0.5, 1, None, 80, distinct=0.75, prompt_tokens=40)) > \
        p(A.ProbeFeatures(0.25, 1, None, 80, distinct=1.0, prompt_tokens=40))
    assert p(A.ProbeFeatures(0.5, 1, None, 80, distinct=0.75, prompt_tokens=40)) > \
        p(A.ProbeFeatures(0.5, 1, None, 80, distinct=0.75, prompt_tokens=60))
    # A feature constant on the calibration set gets no weight (answered, mean tokens here).
    assert model.weights[2] == pytest.approx(0.0) and model.weights[4] == pytest.approx(0.0)


def test_fit_bins_on_observed_pass1_when_given():
    feats, outcomes = synthetic()
    # Say the "easy" group (agreement 1.0) is the hardest by its observed pass@1: bins must follow.
    pass1 = {pid: 0.05 if pid.startswith("easy") else 0.5 if pid.startswith("mid") else 0.9 for pid in feats}
    model = A.fit(feats, outcomes, CONFIGS, n_bins=3, probe_samples=4, pass1=pass1, shrinkage=0)
    assert model.bin_of(feats["easy-0"]) == 0 and model.bin_of(feats["hard-0"]) == 2


def hopeless_and_medium(per_group=20):
    """Two groups: hopeless (5% at any budget) and medium (20% at 512, 60% at 2048)."""
    feats, outcomes = {}, []
    for i in range(2 * per_group):
        hopeless = i < per_group
        pid = f"{'h' if hopeless else 'm'}{i}"
        feats[pid] = A.ProbeFeatures(0.25 if hopeless else 0.75, 1.0, None, 80.0)
        k = i % 20
        for budget, tokens, rate in ((512, 400.0, 0.05 if hopeless else 0.2), (2048, 1300.0, 0.05 if hopeless else 0.6)):
            outcomes.append(A.Outcome(pid, "cheap", budget, k < round(rate * 20), tokens))
        outcomes.append(A.Outcome(pid, A.PROBE_ONLY.label, 2048, k < 1, 320.0))
        outcomes.append(A.Outcome(pid, A.PROBE_ONLY.label, 512, k < 1, 320.0))
    return feats, outcomes


def test_a_price_of_compute_stops_hopeless_prompts_and_spends_on_the_rest():
    feats, outcomes = hopeless_and_medium()
    model = A.fit(feats, outcomes, [CONFIGS[0], A.PROBE_ONLY], n_bins=2, probe_samples=4, shrinkage=0)
    hopeless, medium = feats["h0"], feats["m39"]
    # With no price, the most accurate choice: everything gets the whole budget (ties -> fewer tokens).
    assert model.decide(medium, 2048, probe_tokens=320).budget == 2048
    # Priced at 2 points per 1000 tokens: the hopeless bin gains nothing from 4x the tokens and stops.
    d = model.decide(hopeless, 2048, probe_tokens=320, price_per_1k_tokens=0.02)
    assert d.label == "probe_only" and d.expected_tokens == pytest.approx(320)
    d = model.decide(medium, 2048, probe_tokens=320, price_per_1k_tokens=0.02)
    assert (d.label, d.budget) == ("cheap", 2048) and d.expected_accuracy == pytest.approx(0.6)
    # The price is per token, not per doubling: 40 points for 900 more tokens is worth it at 0.4
    # per 1000 tokens, and not at 0.5.
    assert model.decide(medium, 2048, probe_tokens=320, price_per_1k_tokens=0.4).budget == 2048
    assert model.decide(medium, 2048, probe_tokens=320, price_per_1k_tokens=0.5).budget < 2048
    # The probe cannot be undone: a probe-reusing choice never costs less than the probe.
    d = model.decide(medium, 2048, probe_tokens=500, price_per_1k_tokens=0.5)
    assert d.expected_tokens >= 500


def test_a_probe_reusing_choice_never_has_fewer_samples_than_the_probe_already_drew():
    # Calibration (by chance) rates 1 sample at 128 tokens above the 4-sample probe; after that
    # probe, "1 sample" would really be the probe plus one, so it is not on offer.
    feats, outcomes = {}, []
    for i in range(20):
        pid = f"p{i}"
        feats[pid] = A.ProbeFeatures(0.5, 1.0, None, 80.0)
        outcomes += [A.Outcome(pid, "cheap", 128, i < 12, 30.0), A.Outcome(pid, "cheap", 512, i < 10, 120.0),
                     A.Outcome(pid, A.PROBE_ONLY.label, 512, i < 10, 110.0)]
    model = A.fit(feats, outcomes, [CONFIGS[0], A.PROBE_ONLY], n_bins=1, probe_samples=4, shrinkage=0)
    assert model.decide(feats["p0"], 512, probe_tokens=100).budget == 128  # the floor is what was spent...
    d = model.decide(feats["p0"], 512, probe_tokens=100, probe_budget=512)  # ...unless the probe's budget is known
    assert d.budget == 512 and d.expected_accuracy == pytest.approx(0.5)
    # A pooled share smaller than the probe's budget still leaves the whole share on offer.
    assert model.decide(feats["p0"], 300, probe_tokens=100, probe_budget=512).budget == 300


def probes_without_samples(feats, outcomes):
    """Probe records as calibration would build them, but without recorded samples (so auto's
    choices are judged by the recorded outcomes)."""
    from ttc.calibrate import ProbeRecord

    return {pid: ProbeRecord(features=f, tokens=320.0, budget=512, correct=next(
        o.correct for o in outcomes if o.problem_id == pid and o.config == A.PROBE_ONLY.label)) for pid, f in feats.items()}


def test_calibration_picks_the_price_with_the_smallest_cross_fitted_ratio():
    from ttc.calibrate import choose_settings

    feats, outcomes = hopeless_and_medium(per_group=80)  # enough problems per fold for the data to beat the prior
    probes = probes_without_samples(feats, outcomes)
    configs = [CONFIGS[0], A.PROBE_ONLY]
    price, margin, tried = choose_settings(probes, outcomes, configs, majority_label="cheap", probe_samples=4,
                                           max_tokens=128, folds=4, n_bins=2, prices=(0.0, 0.05), margins=(0,))
    assert [t["price_per_1k_tokens"] for t in tried] == [0.0, 0.05]
    assert tried[1]["compute_ratio"] < tried[0]["compute_ratio"] and (price, margin) == (0.05, 0)
    assert choose_settings(probes, outcomes, configs, majority_label=None) == (0.0, 0, [])


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


def test_the_settings_chosen_are_the_gentlest_nearly_as_good_as_the_best(monkeypatch):
    from ttc import calibrate

    ratios = {(0.0, 0): 0.6, (0.05, 0): 0.5, (0.08, 0): 0.46, (0.12, 0): 0.45, (0.16, 0): None,  # 0.16 never gets there
              (0.0, 2): 0.7, (0.05, 2): 0.55, (0.08, 2): 0.48, (0.12, 2): 0.44, (0.16, 2): None}
    monkeypatch.setattr(calibrate, "evaluate", lambda *a, price_per_1k_tokens, stop_margin, **kw:
                        {"compute_ratio": ratios[(price_per_1k_tokens, stop_margin)]})
    args, grid = ({}, [], []), dict(prices=(0.0, 0.05, 0.08, 0.12, 0.16), margins=(0, 2))
    # Within 10% of the best (0.44): 0.08 without an early stop is the gentlest such setting.
    assert calibrate.choose_settings(*args, majority_label="m", **grid)[:2] == (0.08, 0)
    assert calibrate.choose_settings(*args, majority_label="m", tolerance=0.0, **grid)[:2] == (0.12, 2)
    ratios.update({k: None for k in ratios})
    assert calibrate.choose_settings(*args, majority_label="m", **grid)[:2] == (0.0, 0)


def test_a_vote_is_settled_by_its_margin_in_samples():
    assert not A.vote_settled([3, 1], 0)  # 0: never stop early
    assert A.vote_settled([3, 1], 2) and A.vote_settled([2], 2) and not A.vote_settled([2, 1, 1], 2)
    assert not A.vote_settled([], 1) and A.vote_settled([1], 1)


def draws(*spec):
    """Draws from (cluster, correct, tokens, score) tuples."""
    from ttc.calibrate import Draw

    return [Draw(*d) for d in spec]


def test_simulated_votes_follow_majority_weighted_and_verifier_rules():
    from ttc.calibrate import simulated_vote

    ds = draws((0, False, 10, 0.1), (1, True, 10, 0.9), (0, False, 10, 0.2), (-1, False, 10, 0.99))
    assert simulated_vote(ds, "majority") is False  # 2 votes to 1
    assert simulated_vote(ds, "weighted") is True  # 0.9 against 0.3
    assert simulated_vote(ds, "verifier") is False  # the best-scored sample has no answer (as best_scored picks it)
    assert simulated_vote(ds[:3], "verifier") is True
    assert simulated_vote(draws((1, True, 5, None), (0, False, 5, None))) is True  # a tie goes to the first seen
    assert simulated_vote(draws((-1, False, 5, None))) is False


def test_simulated_best_of_n_stops_once_the_vote_is_settled():
    from ttc.calibrate import ProbeRecord, simulated_best_of_n

    probe = ProbeRecord(features=A.ProbeFeatures(0.5, 1.0, None, 10.0), tokens=40.0, budget=512, correct=False,
                        draws=draws((0, True, 10, None), (0, True, 10, None), (1, False, 10, None), (2, False, 10, None)),
                        more={"cheap": draws(*[(0, True, 10, None)] * 2 + [(1, False, 10, None)] * 10)})
    # No early stop: all 12 more samples; the vote is 4 to 11 for the wrong answer.
    assert simulated_best_of_n(probe, "cheap", 12, "majority", 0, orderings=None) == (False, 160.0)
    # Margin 2: the probe has 2 to 1; after one round of 4 more (2 right, 2 wrong) it is 4 to 3,
    # after the next (4 wrong) 4 to 7: settled for the wrong answer at 12 samples.
    assert simulated_best_of_n(probe, "cheap", 12, "majority", 2, orderings=None) == (False, 120.0)
    # Margin 1: the probe's own vote (2 to 1) is settled: nothing more is drawn.
    assert simulated_best_of_n(probe, "cheap", 12, "majority", 1, orderings=None) == (True, 40.0)
    assert simulated_best_of_n(probe, "other", 12, "majority", 1) is None  # nothing recorded for it
    # Averaged over random orders of the 12 recorded samples: still wrong without an early stop
    # (all 12 are drawn, whatever the order); with margin 1, always right at the probe's cost.
    assert simulated_best_of_n(probe, "cheap", 12, "majority", 0) == (0.0, 160.0)
    assert simulated_best_of_n(probe, "cheap", 12, "majority", 1) == (1.0, 40.0)
    # Two more samples: right unless both are wrong (45 of the 66 pairs), so about 0.32.
    accuracy, tokens = simulated_best_of_n(probe, "cheap", 2, "majority", 0)
    assert tokens == 60.0 and 0.1 < accuracy < 0.55


def test_probe_records_pair_each_probe_with_every_sample_of_each_configuration():
    from ttc.calibrate import probe_records

    def record(strategy, budget, answers, pid="p1"):
        return {"id": pid, "strategy": strategy, "budget": {"generated_tokens": budget}, "correct": answers[0] == "4",
                "usage": {"generated_tokens": 10 * len(answers), "prompt_tokens": 30},
                "candidates": [{"answer": a, "correct": a == "4", "num_tokens": 10, "finish_reason": "stop",
                                "score": 0.5} for a in answers]}

    records = [record("probe", 40, ["4", "5", "4.0", None]), record("cheap", 40, ["9"]),
               record("cheap", 80, ["5", "4", "6"]), record("search", 80, ["4"])]
    (pid, probe), = probe_records(records, [CONFIGS[0], CONFIGS[1], A.PROBE_ONLY]).items()
    assert pid == "p1" and probe.correct and probe.tokens == 40 and probe.budget == 40
    assert probe.features.agreement == 0.5 and probe.features.prompt_tokens == 30
    # "4" and "4.0" are one answer; both "cheap" runs are kept, largest first; the beam search reuses no probe.
    assert [d.cluster for d in probe.draws] == [0, 1, 0, -1]
    assert list(probe.more) == ["cheap"] and [d.cluster for d in probe.more["cheap"]] == [1, 0, 2, 3]
    # A best-of-N run's outcome is its expected accuracy over subsets of every sample the
    # configuration drew: the 1-sample run answered "9" (wrong), but 1 of its 4 samples is right.
    outcomes = {(o.config, o.budget): o for o in outcomes_from_records(records, {"p1": probe}, CONFIGS)}
    assert 0.0 < outcomes[("cheap", 40)].correct < 1.0 and outcomes[("cheap", 40)].tokens == 10.0
    assert outcomes[("search", 80)].correct == 1.0  # not best-of-N: the recorded run
    assert outcomes[("probe_only", 40)].correct == 1.0  # the probe's majority: "4" twice


def test_expected_vote_averages_over_subsets_of_the_pool():
    from ttc.calibrate import expected_vote

    pool = draws((0, True, 10, None), (1, False, 20, None), (0, True, 10, None), (2, False, 30, None))
    assert expected_vote(pool, 4) == (1.0, 70.0)  # the whole pool: one vote, "0" wins 2 to 1 to 1
    assert expected_vote(pool, 9) == (1.0, 70.0)  # more than recorded: the whole pool
    accuracy, tokens = expected_vote(pool, 1)  # one sample: right half the time in expectation
    assert 0.25 < accuracy < 0.75 and 10.0 <= tokens <= 30.0
    assert expected_vote(pool, 1, orderings=None) == (1.0, 10.0)  # as recorded: the first sample


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
        # The run's own option overrides the file's: 0 draws the whole budget at once.
        sol = e.solve("q", 2048, "auto", max_tokens=128, allocator="early", stop_margin=0)
        assert sol.metrics["rounds"] == 1 and len(sol.candidates) == 4 + sol.metrics["sub_budget"] // 128


def test_calibrate_cli_reports_its_settings_and_refuses_bad_ones(tmp_path, monkeypatch, capsys):
    from ttc import cli

    monkeypatch.setenv("TTC_HOME", str(tmp_path / "home"))
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump({
        "name": "clical", "generator": {"backend": "fake", "options": {"answers": {"3": 0.5, "4": 0.3, "5": 0.2}}},
        "verifier": {"name": "mean_logprob"}, "dataset": {"source": "arithmetic", "levels": ["add1"], "per_level": 8},
        "sampling": {"max_tokens": 32},
        "strategy": [{"name": "best_of_n", "label": "majority"},
                     {"name": "best_of_n", "selection": "weighted", "label": "weighted"}],
        "budget": [128, 256], "output": str(tmp_path / "out"),
    }))
    assert cli.main(["calibrate", str(path), "--price", "-1", "--no-progress"]) == 2
    assert "--price must be at least 0.0, got -1.0" in capsys.readouterr().err
    assert cli.main(["calibrate", str(path), "--evaluate", "--folds", "2", "--stop-margin", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "price_per_1k_tokens=" in out and "stop_margin=" in out and "compute_ratio" in out
    # With a verifier, the probe's samples carry scores, so a weighted best-of-N can count them.
    probe = next(json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
                 if json.loads(line)["strategy"] == "probe")
    assert all(c["score"] is not None for c in probe["candidates"])
    report = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert report["evaluation"]["stop_margin"] == 2 and len(report["settings_tried"]) == 36


def weighted_allocator(tmp_path, monkeypatch, name="wtd", probe_samples=4, stop_margin=0):
    """An allocator whose only choice (besides stopping) is verifier-weighted best-of-N."""
    monkeypatch.setenv("TTC_HOME", str(tmp_path))
    feats, outcomes = hopeless_and_medium()
    weighted = A.ConfigChoice(label="cheap", strategy="best_of_n", options={"selection": "weighted"})
    model = A.fit(feats, outcomes, [weighted, A.PROBE_ONLY], n_bins=2, probe_samples=probe_samples, shrinkage=0)
    A.save(model.model_copy(update={"stop_margin": stop_margin}), A.allocator_path(name))
    return name


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
    from ttc.budget import Budget

    with fake_engine({"42": 0.5, "7": 0.5}) as e, pytest.raises(ConfigError, match="give the budget as an int"):
        e.solve("q", Budget(seconds=60), "auto", max_tokens=100)


def test_auto_with_an_allocator_runs_under_a_budget_without_a_token_cap(tmp_path, monkeypatch):
    from ttc.budget import Budget

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


def test_the_simulation_spends_what_auto_spends_when_run(tmp_path, monkeypatch):
    """Calibrate on the fakes, then run `auto` for real on the same problems: the simulated and the
    real spend must agree, and so, roughly, must accuracy."""
    from ttc.calibrate import auto_points, grid_configs, outcomes_from_records, probe_records
    from ttc.recipe import parse_recipe
    from ttc.results import ResultsLog
    from ttc.runner import run_recipe

    monkeypatch.setenv("TTC_HOME", str(tmp_path / "home"))
    # Every prompt draws 3, 4 or 5; the reference is 3 for some prompts, 4 or 5 for others.
    (tmp_path / "qs.jsonl").write_text("".join(json.dumps({"problem": f"question {i}", "answer": str(3 + i % 3)}) + "\n"
                                               for i in range(40)))
    data = {"name": "sim", "generator": {"backend": "fake", "options": {"answers": {"3": 0.4, "4": 0.35, "5": 0.25}}},
            "verifier": {"name": "mean_logprob"},
            "dataset": {"source": str(tmp_path / "qs.jsonl")},
            "sampling": {"max_tokens": 32},
            "strategy": [{"name": "best_of_n", "label": "majority"},
                         {"name": "best_of_n", "selection": "weighted", "label": "weighted"}],
            "budget": [128, 512], "output": str(tmp_path / "cal")}
    recipe = parse_recipe(data)
    report = calibrate(recipe, probe_samples=4, progress=False)
    model = A.load(report["allocator"][-1]).model_copy(update={"stop_margin": 2, "price_per_1k_tokens": 0.0})
    A.save(model, A.allocator_path("sim"))
    records = ResultsLog(tmp_path / "cal" / "results.jsonl").load()
    configs = grid_configs(recipe)
    probes = probe_records(records, configs)
    outcomes = outcomes_from_records(records, probes, configs)
    table = {(o.problem_id, o.config, o.budget): o for o in outcomes}
    simulated = auto_points(model, sorted(probes), probes, table, [512], max_tokens=32)[512]

    # The same fake seed draws the calibration's probes again (a fresh generator, the same first request
    # per prompt), so auto decides as simulated and this checks the rest: the rounds, early stops and
    # what they cost. With fresh probes the decisions themselves move (40 problems; the bench checks that).
    live_data = {**data, "strategy": [{"name": "auto", "allocator": "sim", "label": "auto"}], "budget": [512],
                 "output": str(tmp_path / "live")}
    run_recipe(parse_recipe(live_data), progress=False, make_plots=False)
    live = ResultsLog(tmp_path / "live" / "results.jsonl").load()
    assert len(live) == len(simulated) == 40
    sim_tokens = sum(t for _, t in simulated) / 40
    live_tokens = sum(r["usage"]["generated_tokens"] for r in live) / 40
    assert live_tokens == pytest.approx(sim_tokens, rel=0.1)
    assert any(r["metrics"].get("rounds", 0) < 3 for r in live if r["metrics"].get("decision") == "run")  # early stops
    assert sum(bool(r["correct"]) for r in live) / 40 == pytest.approx(sum(c for c, _ in simulated) / 40, abs=0.15)
