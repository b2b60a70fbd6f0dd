"""Calibration: the grid on the fakes, choosing its settings, and simulating auto on recorded samples."""
import json

import pytest
import yaml

from allocator_cases import CONFIGS, draws, hopeless_and_medium, probes_without_samples
from strategies.auto import allocator as A
from ttc.calibrate import calibrate, outcomes_from_records, tokens_to_reach
from ttc.evaluation.recipe import load_recipe


def test_tokens_to_reach_by_hand():
    curve = [{"tokens": 100, "accuracy": 0.2}, {"tokens": 400, "accuracy": 0.6}]
    assert tokens_to_reach(curve, 0.2) == 100
    assert tokens_to_reach(curve, 0.4) == pytest.approx(200)  # half-way in log2 between 100 and 400
    assert tokens_to_reach(curve, 0.7) is None


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


def test_the_simulation_spends_what_auto_spends_when_run(tmp_path, monkeypatch):
    """Calibrate on the fakes, then run `auto` for real on the same problems: the simulated and the
    real spend must agree, and so, roughly, must accuracy."""
    from ttc.calibrate import auto_points, grid_configs, outcomes_from_records, probe_records
    from ttc.evaluation.recipe import parse_recipe
    from ttc.evaluation.results import ResultsLog
    from ttc.evaluation.runner import run_recipe

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


def test_calibrate_cli_refuses_a_negative_stop_margin_before_running_anything(tmp_path, capsys):
    from ttc import cli

    assert cli.main(["calibrate", str(tmp_path / "never_read.yaml"), "--stop-margin", "-1"]) == 2
    assert "--stop-margin must be at least 0, got -1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
