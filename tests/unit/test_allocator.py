"""The allocator: fitting on synthetic outcome tables with a known optimum, bins, prices, decisions, files."""
import json

import pytest

from allocator_cases import CONFIGS, hopeless_and_medium, synthetic
from strategies.auto import allocator as A
from ttc.core.errors import ConfigError


def test_fit_recovers_the_known_optimum_per_bin():
    feats, outcomes = synthetic()
    model = A.fit(feats, outcomes, CONFIGS, n_bins=3, probe_samples=4, shrinkage=0)
    assert len(model.bins) == 3 and [b.problems for b in model.bins] == [10, 10, 10]
    hard, mid, easy = model.bins
    assert hard.best == {"256": "search", "1024": "search"}
    assert easy.best == {"256": "cheap", "1024": "cheap"}
    assert mid.best["1024"] == "cheap"  # equal accuracy: the cheaper configuration wins
    assert hard.accuracy["search"]["1024"] == pytest.approx(0.6)
    assert model.decide(A.ProbeFeatures(0.25, 1, None, 1), 1024, price_per_1k_tokens=0.0).label == "search"
    assert model.decide(A.ProbeFeatures(1.0, 1, None, 1), 1024, price_per_1k_tokens=0.0).label == "cheap"
    assert model.decide(A.ProbeFeatures(0.25, 1, None, 1), 1024, allowed=["cheap"], price_per_1k_tokens=0.0).label == "cheap"


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
    assert A.fit(feats, outcomes, configs, n_bins=2, probe_samples=4, shrinkage=0).decide(easy, 512, price_per_1k_tokens=0.0).label == "b"
    assert A.fit(feats, outcomes, configs, n_bins=2, probe_samples=4, shrinkage=20).decide(easy, 512, price_per_1k_tokens=0.0).label == "a"


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
    assert model.decide(A.ProbeFeatures(1.0, 1, None, 1), 1024, price_per_1k_tokens=0.0).label == "probe_only"
    assert model.bins[1].best == {"1024": "probe_only"}


def test_difficulty_model_ranks_prompts_by_what_their_probes_show():
    from strategies.auto.difficulty import fit_difficulty

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


def test_a_vote_is_settled_by_its_margin_in_samples():
    assert not A.vote_settled([3, 1], 0)  # 0: never stop early
    assert A.vote_settled([3, 1], 2) and A.vote_settled([2], 2) and not A.vote_settled([2, 1, 1], 2)
    assert not A.vote_settled([], 1) and A.vote_settled([1], 1)
