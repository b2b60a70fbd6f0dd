"""Calibration: the grid on the fakes, choosing its settings, and judging auto by running it on replayed samples."""
import json

import pytest
import yaml

from allocator_cases import CONFIGS, draws, hopeless_and_medium, probe_record, probes_without_pools
from strategies.auto import allocator as A
from ttc.calibrate import AutoReplay, calibrate, expected_vote, outcomes_from_records, tokens_to_reach
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
    report = calibrate(load_recipe(path), probe_samples=2, evaluate=True, folds=3, progress=False)
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
    probes = probes_without_pools(feats, outcomes)
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


def test_best_of_n_is_judged_by_the_one_selection_rule():
    ds = draws((0, False, 10, 0.1), (1, True, 10, 0.9), (0, False, 10, 0.2), (-1, False, 10, 0.99))
    assert expected_vote(ds, 4, "majority") == (0.0, 40.0)  # 2 votes to 1
    assert expected_vote(ds, 4, "weighted") == (1.0, 40.0)  # 0.9 against 0.3
    assert expected_vote(ds, 4, "verifier") == (1.0, 40.0)  # the best-scored sample WITH an answer
    assert expected_vote(ds[:3], 3, "verifier") == (1.0, 30.0)
    assert expected_vote(draws((1, True, 5, None), (0, False, 5, None)), 2) == (1.0, 10.0)  # a tie: the first seen
    assert expected_vote(draws((-1, False, 5, None)), 1) == (0.0, 5.0)
    # combined: log 2 + g logit(.15) against log 1 + g logit(.9): g = 0 is majority, g = 1 overturns it
    assert expected_vote(ds, 4, "combined", verifier_weight=0.0) == (0.0, 40.0)
    assert expected_vote(ds, 4, "combined", verifier_weight=1.0) == (1.0, 40.0)


def test_a_grid_configuration_declares_its_combined_weight():
    from strategies.auto.allocator import ConfigChoice

    choice = ConfigChoice(label="c", strategy="best_of_n", options={"selection": "combined", "verifier_weight": 0.3})
    assert (choice.selection, choice.verifier_weight) == ("combined", 0.3)
    assert ConfigChoice(label="b", strategy="beam_search").verifier_weight == 1.0
    # A sample without a score weighs nothing in a weighted vote (it used to weigh an average score).
    assert expected_vote(draws((0, False, 5, None), (0, False, 5, None), (1, True, 5, 0.1)), 3, "weighted")[0] == 1.0


def test_calibration_uses_the_selection_rule_of_ttc_core(monkeypatch):
    """Change the rule in ttc.core.selection and calibration's judgement changes with it."""
    from ttc.core import selection

    pool = draws((0, True, 10, None), (0, True, 10, None), (1, False, 10, None))
    probe = probe_record(draws((0, True, 10, None), (0, True, 10, None), (1, False, 10, None), (2, False, 10, None)),
                         {"cheap": pool}, budget=40)
    model = settled_model()
    at = [A.Outcome("p", "cheap", b, 0.0, 0.0) for b in (40, 160)]  # the grid's budgets
    replay = lambda: AutoReplay({"p": probe}, at, max_tokens=10, orderings=None).points([(model, ["p"])], stop_margin=0)
    assert expected_vote(pool, 3, orderings=None) == (1.0, 30.0)
    assert replay() == {40: [(1.0, 40.0)], 160: [(1.0, 70.0)]}  # the probe's 2 of 4; then 4 of 7
    rule = selection.pick_many
    monkeypatch.setattr(selection, "pick_many", lambda labels, scores, how, g=1.0: rule(labels, scores, how) * 0 + (
        labels.shape[1] - 1))  # "the last candidate wins"
    assert expected_vote(pool, 3, orderings=None) == (0.0, 30.0)
    assert replay() == {40: [(0.0, 40.0)], 160: [(0.0, 70.0)]}


def settled_model(probe_samples=4):
    """An allocator for 10-token samples whose only choice besides stopping is best-of-N majority at
    160 tokens (the probe's 4 samples and 12 more), and at 40 tokens the probe alone."""
    from strategies.auto.allocator import fit

    cheap = A.ConfigChoice(label="cheap", strategy="best_of_n", options={"selection": "majority", "max_tokens": 10})
    feats = {f"q{i}": probe_record(draws((0, True, 10, None), (0, True, 10, None), (1, False, 10, None),
                                         (2, False, 10, None))).features for i in range(4)}
    outcomes = [A.Outcome(pid, label, b, acc, tokens) for pid in feats for label, b, acc, tokens in
                (("cheap", 40, 0.5, 40.0), ("cheap", 160, 0.9, 160.0), ("probe_only", 40, 0.5, 40.0),
                 ("probe_only", 160, 0.5, 40.0))]
    return fit(feats, outcomes, [cheap, A.PROBE_ONLY], n_bins=1, probe_samples=probe_samples, shrinkage=0)


def test_auto_is_replayed_in_rounds_and_stops_once_the_vote_is_settled():
    """The real auto on recorded samples: its rounds, its early stop, what they cost."""
    probe = probe_record(draws((0, True, 10, None), (0, True, 10, None), (1, False, 10, None), (2, False, 10, None)),
                         {"cheap": draws(*[(0, True, 10, None)] * 2 + [(1, False, 10, None)] * 10)}, budget=40)
    model = settled_model()

    def at_160(margin, orderings=None):
        replay = AutoReplay({"p": probe}, [A.Outcome("p", "cheap", 160, 0.0, 0.0)], max_tokens=10, orderings=orderings)
        return replay.points([(model, ["p"])], stop_margin=margin)[160], replay.runs

    # No early stop: all 12 more samples; the vote is 4 to 11 for the wrong answer.
    assert at_160(0) == ([(0.0, 160.0)], 2)  # one run to decide, one on the samples as recorded
    # Margin 2: the probe has 2 to 1; after one round of 4 more (2 right, 2 wrong) it is 4 to 3,
    # after the next (4 wrong) 4 to 7: settled for the wrong answer at 12 samples.
    assert at_160(2)[0] == [(0.0, 120.0)]
    # Margin 1: the probe's own vote (2 to 1) is settled: nothing more is drawn.
    assert at_160(1)[0] == [(1.0, 40.0)]
    # Averaged over random orders of the 12 recorded samples: still wrong without an early stop
    # (all 12 are drawn, whatever the order); with margin 1, always right at the probe's cost.
    assert at_160(0, orderings=32) == ([(0.0, 160.0)], 33)
    assert at_160(1, orderings=32)[0] == [(1.0, 40.0)]
    # Without the configuration's samples, the recorded run at the budget auto chose is the judge.
    bare = probe_record(probe.draws, budget=40)
    replay = AutoReplay({"p": bare}, [A.Outcome("p", "cheap", 160, 0.75, 150.0)], max_tokens=10)
    assert replay.points([(model, ["p"])], stop_margin=0)[160] == [(0.75, 150.0)]
    # A budget below the probe's cost gives no point: auto refuses it.
    assert 30 not in AutoReplay({"p": probe}, [A.Outcome("p", "cheap", 30, 1.0, 30.0)], max_tokens=10).points(
        [(model, ["p"])])


def test_replay_generator_serves_in_order_and_charges_what_was_recorded():
    import asyncio

    from ttc.core.budget import Budget, Ledger
    from ttc.core.context import SearchContext
    from ttc.core.errors import VerifierError
    from ttc.core.types import Problem, SamplingParams, Trajectory
    from verifiers.replay import ReplayScorer
    from workers.replay import ReplayGenerator, ReplaySample

    gen = ReplayGenerator([ReplaySample("1/2", 30, score=0.9), ReplaySample(None, 64, "length"),
                           ReplaySample("0.5", 20, score=-0.2), ReplaySample("7", 50)], prompt_tokens=12)
    ctx = SearchContext(Problem("q", reference="0.5"), "q", gen, Ledger(Budget(generated_tokens=1000)),
                        ReplayScorer(gen))

    async def go():
        first = await ctx.sample(SamplingParams(n=2, max_tokens=64))
        second = await ctx.sample(SamplingParams(n=5, max_tokens=40))  # 2 left; "7" is cut at 40 tokens
        third = await ctx.sample(SamplingParams(n=1, max_tokens=64))  # nothing left
        return first, second, third, await ctx.score(first + second)

    first, second, third, scores = asyncio.run(go())
    assert [t.answer for t in first + second] == ["1/2", None, "0.5", None]
    assert [t.correct for t in first + second] == [True, False, True, False]  # judged as the recorded run was
    assert [t.num_tokens for t in first + second] == [30, 64, 20, 40]
    assert [t.finish_reason for t in first + second] == ["stop", "length", "stop", "length"]
    assert third == [] and gen.left == 0
    u = ctx.ledger.usage
    assert (u.generated_tokens, u.prompt_tokens, u.requests) == (154, 4 * 12, 3)  # per sample; the empty answer costs none
    assert scores[0] == [0.9] and scores[2] == [-0.2] and all(s[0] != s[0] for s in (scores[1], scores[3]))  # NaN
    assert u.verifier_tokens == 0
    with pytest.raises(VerifierError, match="never served"):
        asyncio.run(ReplayScorer(gen).score(ctx.problem, [Trajectory(["made up"], 2, "stop")]))


def test_probe_records_pair_each_probe_with_every_sample_of_each_configuration():
    from ttc.calibrate import probe_records

    def record(strategy, budget, answers, pid="p1"):
        return {"id": pid, "strategy": strategy, "budget": {"generated_tokens": budget}, "correct": answers[0] == "4",
                "usage": {"generated_tokens": 10 * len(answers), "prompt_tokens": 30 * len(answers)},
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
    assert "--price (price_per_1k_tokens): Input should be greater than or equal to 0, got -1.0" in (
        capsys.readouterr().err)
    assert cli.main(["calibrate", str(path), "--evaluate", "--folds", "2", "--stop-margin", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "price_per_1k_tokens=" in out and "stop_margin=" in out and "compute_ratio" in out
    # With a verifier, the probe's samples carry scores, so a weighted best-of-N can count them.
    probe = next(json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
                 if json.loads(line)["strategy"] == "probe")
    assert all(c["score"] is not None for c in probe["candidates"])
    report = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert report["evaluation"]["stop_margin"] == 2 and len(report["settings_tried"]) == 36


def test_calibrations_judgement_of_auto_is_auto_run_on_the_recorded_samples(tmp_path, monkeypatch):
    """Run a calibration grid on the fakes; then run `auto` through the engine, from an allocator file, on a replay
    of each problem's recorded samples: it decides, draws, stops and answers exactly as calibration's
    evaluation says. And run live on the fakes, it spends about what calibration expects."""
    from ttc.calibrate import grid_configs, pass1_from_records, probe_recipe, probe_records
    from ttc.core.types import Problem
    from ttc.engine import Engine
    from ttc.evaluation.recipe import parse_recipe
    from ttc.evaluation.results import ResultsLog
    from ttc.evaluation.runner import run_recipe
    from verifiers.replay import ReplayScorer
    from workers.replay import ReplayGenerator

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
    run_recipe(probe_recipe(recipe, 4), progress=False, make_plots=False)  # calibration's grid, without choosing
    run_recipe(recipe, progress=False, make_plots=False)  # its settings: this test sets them
    records = ResultsLog(tmp_path / "cal" / "results.jsonl").load()
    configs = grid_configs(recipe)
    probes = probe_records(records, configs)
    outcomes = outcomes_from_records(records, probes, configs)
    model = A.fit({pid: p.features for pid, p in probes.items()}, outcomes, configs, probe_samples=4,
                  pass1=pass1_from_records(records))
    model = model.model_copy(update={"stop_margin": 2, "price_per_1k_tokens": 0.0})
    A.save(model, A.allocator_path("sim"))
    # The same allocator, left with the verifier-weighted best-of-N only (so the replayed scores decide too).
    weighted = model.model_copy(update={"configs": [c for c in model.configs if c.label != "majority"]})
    A.save(weighted, A.allocator_path("sim_weighted"))
    ids = sorted(probes)

    for name, allocator in (("sim", model), ("sim_weighted", weighted)):
        as_recorded = AutoReplay(probes, outcomes, max_tokens=32, orderings=None).points([(allocator, ids)])[512]
        assert len(as_recorded) == len(ids)
        decisions = set()
        for pid, judged in zip(ids, as_recorded):
            probe = probes[pid]
            # After the probe, the samples of the configuration auto picks (as calibration serves them).
            for label, pool in [(None, [])] + sorted(probe.more.items()):
                generator = ReplayGenerator([d.replay() for d in probe.draws + pool], prompt_tokens=probe.prompt_tokens,
                                            cached_prompt_tokens=probe.cached_prompt_tokens)
                with Engine(generator=generator, scorer=ReplayScorer(generator)) as e:
                    sol = e.solve(Problem(pid, id=pid, reference=probe.reference), 512, "auto", allocator=name,
                                  max_tokens=32)
                if sol.metrics.get("config") == label:
                    break
            decisions.add((sol.metrics["decision"], label))
            assert (float(bool(sol.correct)), float(sol.usage.generated_tokens)) == judged, (name, pid)
        # Both kinds of decision occur, and a best-of-N chosen is replayed with its own samples.
        assert ("stop_after_probe", None) in decisions
        assert ("run", "weighted" if name == "sim_weighted" else "majority") in decisions

    # Live: the same fake seed draws the calibration's probes again (a fresh generator, the same first
    # request per prompt), so auto decides as replayed, and the rest is new draws of the same prompts.
    expected = AutoReplay(probes, outcomes, max_tokens=32).points([(model, ids)])[512]
    live_data = {**data, "strategy": [{"name": "auto", "allocator": "sim", "label": "auto"}], "budget": [512],
                 "output": str(tmp_path / "live")}
    run_recipe(parse_recipe(live_data), progress=False, make_plots=False)
    live = ResultsLog(tmp_path / "live" / "results.jsonl").load()
    assert len(live) == len(expected) == 40
    live_tokens = sum(r["usage"]["generated_tokens"] for r in live) / 40
    assert live_tokens == pytest.approx(sum(t for _, t in expected) / 40, rel=0.1)
    assert any(r["metrics"].get("rounds", 0) < 3 for r in live if r["metrics"].get("decision") == "run")  # early stops
    assert sum(bool(r["correct"]) for r in live) / 40 == pytest.approx(sum(c for c, _ in expected) / 40, abs=0.15)


def test_calibrate_cli_refuses_a_negative_stop_margin_before_running_anything(tmp_path, capsys):
    from ttc import cli

    assert cli.main(["calibrate", str(tmp_path / "never_read.yaml"), "--stop-margin", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--stop-margin (stop_margin): Input should be greater than or equal to 0, got -1" in err
    assert len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
