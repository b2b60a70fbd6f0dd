"""The run report's data (what the page is built from), its rendering and its commands, on a fake run."""
from __future__ import annotations

import json
import re

import pytest

from ttc import cli
from ttc.evaluation.report import terminal_table
from ttc.evaluation.results import ResultsLog
from ttc.report.data import ReportError, choose_details, run_data
from ttc.report.problem import MAX_TEXT, problem_detail, search_tree
from ttc.report.render import page_json, write_problem_report, write_run_report

from report_run import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def records(run):
    return ResultsLog(run / "results.jsonl").load()


def test_configurations_carry_accuracy_band_and_usage_by_kind(run, records):
    data = run_data(run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert [c["config"] for c in data["configs"]] == [row["config"] for row in metrics["table"]]
    for c in data["configs"]:
        mine = [r for r in records if r["config"] == c["config"]]
        correct = [bool(r["correct"]) for r in mine]
        assert c["accuracy"] == pytest.approx(sum(correct) / len(correct))
        assert c["low"] <= c["accuracy"] <= c["high"]
        assert c["mean"]["generated_tokens"] == pytest.approx(
            sum(r["usage"]["generated_tokens"] for r in mine) / len(mine))
        assert c["mean"]["verifier_tokens"] == pytest.approx(sum(r["usage"]["verifier_tokens"] for r in mine) / len(mine))
    # Coverage is drawn from sampled strategies only: a search's finalists are not independent samples.
    assert list(data["scaling"]) == ["majority"]
    assert data["meta"]["problems"] == 6 and data["meta"]["records"] == len(records) == 36
    assert data["meta"]["provenance"][0]["ttc_version"]
    assert data["levels"] == ["easy", "hard"]


def test_a_step_search_tree_has_every_scored_node_and_the_chosen_path(records):
    record = next(r for r in records if r["strategy"].startswith("beam_search"))
    detail = problem_detail(record)
    tree = detail["tree"]
    scored = [n for e in record["trace"] if e["event"] == "step" for n in e["nodes"]]
    assert len(tree["nodes"]) == len(scored) == 12
    chosen = next(c for c in record["candidates"] if c["chosen"])
    by_id = {n["id"]: n for n in tree["nodes"]}
    path = tree["chosen_path"]
    assert path[-1] == chosen["node_id"] and by_id[path[0]]["parent"] is None
    assert all(by_id[child]["parent"] == parent for parent, child in zip(path, path[1:]))
    assert {n["id"] for n in tree["nodes"] if n["on_path"]} == set(path)
    assert all(n["text"] for n in tree["nodes"])  # each node's own step, shown on hover
    statuses = {n["status"] for n in tree["nodes"]}
    assert statuses == {"kept", "pruned", "finished"}
    # The chosen answer and its candidate row agree.
    assert detail["answer"] == chosen["answer"] and sum(c["chosen"] for c in detail["candidates"]) == 1


def test_node_statuses_from_a_trace():
    trace = [
        {"event": "step", "step": 1, "resampled": [1, 1, 2], "nodes": [
            {"id": 1, "parent": None, "score": 0.9, "kept": True, "finished": False, "text": "a"},
            {"id": 2, "parent": None, "score": 0.5, "kept": True, "finished": False, "text": "b"},
            {"id": 3, "parent": None, "score": 0.1, "kept": False, "finished": False, "text": "c"}]},
        {"event": "gibbs_reference", "iteration": 0, "id": 4},
        {"event": "step", "step": 2, "nodes": [
            {"id": 4, "parent": 1, "score": 0.8, "kept": False, "finished": True, "answer": "7", "text": "d"}]},
    ]
    tree = search_tree(trace, chosen_node=4)
    status = {n["id"]: n["status"] for n in tree["nodes"]}
    assert status == {1: "resampled", 2: "kept", 3: "pruned", 4: "finished"}
    assert tree["chosen_path"] == [1, 4] and tree["steps"] == 2
    detail = problem_detail({"id": "x", "trace": trace, "candidates": []})
    assert [e["event"] for e in detail["events"]] == ["gibbs_reference"]  # other events listed generically
    assert search_tree([{"event": "sampled", "samples": 4}], None) is None  # best-of-N: no tree


def test_long_texts_are_clipped_and_say_so():
    detail = problem_detail({"id": "x", "prompt": "p" * (MAX_TEXT + 50),
                             "candidates": [{"text": "t" * (MAX_TEXT + 7), "chosen": True}]})
    assert detail["prompt"].endswith("[50 more characters not shown]")
    assert "[7 more characters not shown]" in detail["candidates"][0]["text"]


def test_details_are_sampled_over_configurations_when_there_are_many(run, records):
    picked = choose_details(records, 12)
    assert len(picked) == 12
    assert len({records[i]["config"] for i in picked}) == 6  # two of each of the 6 configurations
    assert choose_details(records, 12) == picked  # the same run gives the same page
    data = run_data(run, max_details=12)
    assert len(data["details"]) == 12 and len(data["rows"]) == 36
    assert sorted(r["detail"] for r in data["rows"] if r["detail"] is not None) == list(range(12))


def test_the_page_is_self_contained_and_its_data_cannot_close_the_script(run, tmp_path):
    path = write_run_report(run, tmp_path / "r.html")
    html = path.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from a network
    for chart in ("accuracy_tokens", "accuracy_flops", "coverage", "token_kinds"):
        assert f'data-chart="{chart}"' in html
    assert html.count("<svg") >= 4
    hostile = {"text": "</script><script>alert(1)</script><!--"}
    assert "</script" not in page_json(hostile) and "<!--" not in page_json(hostile)
    assert json.loads(page_json(hostile)) == hostile
    assert path.stat().st_size < 2_000_000


def test_run_writes_its_report_and_the_command_rewrites_it(run, tmp_path, capsys):
    assert (run / "report.html").stat().st_size > 10_000
    out = tmp_path / "again.html"
    assert cli.main(["report", str(run), "--out", str(out), "--max-details", "5"]) == 0
    assert str(out) in capsys.readouterr().out and out.is_file()


def test_report_of_a_folder_without_results_names_it(tmp_path, capsys):
    with pytest.raises(ReportError, match="run_dir=.*no results.jsonl"):
        run_data(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 1
    assert "no results.jsonl" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path), "--max-details", "-1"]) == 2


def test_a_torn_line_is_not_repaired_by_the_report(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    results = copy / "results.jsonl"
    results.write_bytes(results.read_bytes() + b'{"torn": ')
    size = results.stat().st_size
    assert run_data(copy)["meta"]["records"] == 36
    assert results.stat().st_size == size  # a reader leaves a folder a run may still be writing alone


def test_one_problem_page(records, tmp_path):
    record = next(r for r in records if r["strategy"].startswith("particle_filtering"))
    path = write_problem_report(record, tmp_path / "one.html")
    html = path.read_text()
    assert 'id="tree"' in html and "Problems (" not in html  # the detail view alone


def test_terminal_table_is_strategy_by_budget():
    table = [{"config": f"{s}@{b}", "strategy": s, "budget": {"generated_tokens": b}, "problems": 8,
              "accuracy": acc, "mean_generated_tokens": b * 0.9}
             for s, b, acc in [("majority", 128, 0.25), ("majority", 512, 0.5), ("beam", 512, 0.375)]]
    lines = terminal_table(table)
    assert "8 problems" in lines[0] and lines[1].split() == ["128", "512"]
    assert lines[2].split() == ["majority", "25%", "@", "115", "50%", "@", "461"]
    assert lines[3].split() == ["beam", "—", "38%", "@", "461"]
    capped = [{**table[0], "budget": {"generated_tokens": 128, "seconds": 5.0}}]
    assert "majority@128" in terminal_table(capped)[0]  # other caps: one configuration per line
