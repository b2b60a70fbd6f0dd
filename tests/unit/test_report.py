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
    # Every event in order, read generically; a step lists its own fields and how many nodes it scored.
    assert [e["event"] for e in detail["events"]] == ["step", "gibbs_reference", "step"]
    assert json.loads(detail["events"][0]["fields"]) == {"step": 1, "resampled": [1, 1, 2], "nodes": 3}
    assert search_tree([{"event": "sampled", "samples": 4}], None) is None  # best-of-N: no tree


def test_long_texts_are_clipped_and_say_so():
    detail = problem_detail({"id": "x", "prompt": "p" * (MAX_TEXT + 50),
                             "candidates": [{"text": "t" * (MAX_TEXT + 7), "chosen": True}]})
    assert detail["prompt"].endswith("[50 more characters not shown]")
    assert "[7 more characters not shown]" in detail["candidates"][0]["text"]


def test_nan_scores_and_old_records_still_make_a_page(run, tmp_path):
    """Scores may be NaN or infinite (a replayed scorer, an empty step); results written before the
    records carried texts and traces have none: the page is written all the same."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    lines = [json.loads(line) for line in (copy / "results.jsonl").read_text().splitlines()]
    lines[0]["candidates"][0]["score"] = float("nan")
    for event in lines[-1]["trace"]:
        for node in event.get("nodes", []):
            node["score"] = float("-inf")
    for key in ("prompt", "trace", "strategy_name"):
        lines[1].pop(key, None)
    for c in lines[1]["candidates"]:
        c.pop("text", None)
    (copy / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    html = write_run_report(copy, tmp_path / "r.html").read_text()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    first = next(d for d in data["details"] if d["id"] == lines[0]["id"] and d["config"] == lines[0]["config"])
    assert first["candidates"][0]["score"] is None


def test_results_of_configurations_the_recipe_no_longer_runs_are_left_out(run, tmp_path):
    """As `ttc run` reports: an older recipe's lines in the same folder are not mixed into this one's."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    old = json.loads((copy / "results.jsonl").read_text().splitlines()[0])
    stale = [{**old, "config": "majority@2048"}, {**old, "settings": "0" * 16}]
    with open(copy / "results.jsonl", "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in stale))
    data = run_data(copy)
    assert data["meta"]["records"] == 36 and data["meta"]["left_out"] == 2
    assert "majority@2048" not in {c["config"] for c in data["configs"]}


def test_failures_count_only_problems_no_later_run_finished(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    done = json.loads((copy / "results.jsonl").read_text().splitlines()[0])
    # Every problem of one configuration failed: it is listed, with no problems and no accuracy.
    lines = [json.loads(line) for line in (copy / "results.jsonl").read_text().splitlines()]
    gone = "particle_filtering[max_step_tokens=16,max_steps=3,n=4]@384"
    (copy / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines if r["config"] != gone))
    empty = next(c for c in run_data(copy)["configs"] if c["config"] == gone)
    assert empty["problems"] == 0 and empty["accuracy"] is None
    write_run_report(copy, tmp_path / "r.html")
    errors = [{"config": done["config"], "id": done["id"], "error": "boom"},  # failed, then finished on a rerun
              {"config": done["config"], "id": "p99", "error": "boom"},
              {"config": done["config"], "id": "p99", "error": "boom again"}]
    (copy / "errors.jsonl").write_text("".join(json.dumps(e) + "\n" for e in errors))
    assert run_data(copy)["meta"]["errors"] == 1


def test_model_name_says_which_default(run):
    from ttc.report.data import EMBEDDED_MODEL, model_name

    assert model_name({"backend": "vllm", "model": None}) == EMBEDDED_MODEL
    assert model_name({"backend": "fake", "model": None}) == "fake's default"
    assert model_name({"backend": "openai", "model": "Qwen/Qwen2.5-7B"}) == "Qwen/Qwen2.5-7B"
    assert run_data(run)["meta"]["model"] == "fake's default"


def test_provenance_keeps_one_entry_per_code_version(tmp_path, monkeypatch):
    from ttc.evaluation import runner

    path = tmp_path / "provenance.json"
    runner.record_provenance(path)
    runner.record_provenance(path)  # a rerun on the same code adds nothing
    assert len(json.loads(path.read_text())) == 1
    import ttc.provenance as P

    monkeypatch.setattr(P, "provenance", lambda: {"ttc_version": "9", "commit": "abc", "dirty": False,
                                                  "machine": "m", "date": "d"})
    runner.record_provenance(path)
    assert [e["commit"] for e in json.loads(path.read_text())][-1] == "abc"
    path.write_text('[{"commit": ')  # torn by a kill mid-write (older versions wrote in place)
    runner.record_provenance(path)
    assert json.loads(path.read_text())[0]["commit"] == "abc"


def test_details_are_sampled_over_configurations_when_there_are_many(run, records):
    picked = choose_details(records, 12)
    assert len(picked) == 12
    assert len({records[i]["config"] for i in picked}) == 6  # two of each of the 6 configurations
    assert choose_details(records, 12) == picked  # the same run gives the same page
    data = run_data(run, max_details=12)
    assert len(data["details"]) == 12 and len(data["rows"]) == 36
    assert sorted(r["detail"] for r in data["rows"] if r["detail"] is not None) == list(range(12))
    assert [r["row"] for r in data["rows"]] == list(range(36))  # a row's number is its place on the page
    assert len(choose_details(records, 4)) == 4 and choose_details(records, 0) == set()


def test_one_problems_texts_share_a_size_limit():
    from ttc.report.problem import DETAIL_TEXT

    record = {"id": "x", "candidates": [{"text": "t" * 5000, "answer": "1"} for _ in range(64)]}
    detail = problem_detail(record)
    assert sum(len(c["text"]) for c in detail["candidates"]) < DETAIL_TEXT + 64 * 60
    assert all("more characters not shown" in c["text"] for c in detail["candidates"])


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
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', out.read_text(), re.S).group(1))
    assert len(data["details"]) == 5


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


def test_allocator_choices_by_bin():
    from ttc.report.data import allocator_choices

    records = [{"metrics": {"decision": "run", "config": "weighted@2048", "bin": 0}},
               {"metrics": {"decision": "run", "config": "weighted@2048", "bin": 0}},
               {"metrics": {"decision": "stop_after_probe", "reason": "confident"}},
               {"metrics": {"decision": "stop_after_probe", "reason": "allocator", "bin": 2}},
               {"metrics": {"votes": {"7": 2}}}]  # not auto: not counted
    choices = allocator_choices(records)
    assert choices["bins"] == ["bin 0", "bin 2", "—"]
    assert choices["counts"] == {"bin 0": {"weighted@2048": 2}, "bin 2": {"stop after probe (allocator)": 1},
                                 "—": {"stop after probe (confident)": 1}}
    assert allocator_choices(records[-1:]) is None


def test_solve_writes_the_detail_page_of_one_problem(tmp_path, capsys):
    out = tmp_path / "solve.html"
    assert cli.main(["solve", "What is 6 * 7?", "--backend", "fake", "--verifier", "fake", "--budget", "512",
                     "--strategy", "beam_search", "--set", "n=4", "--set", "beam_width=2", "--set", "max_step_tokens=16",
                     "--report", str(out)]) == 0
    assert "report:" in capsys.readouterr().err
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', out.read_text(), re.S).group(1))
    assert data["kind"] == "problem" and data["details"][0]["prompt"] == "What is 6 * 7?"
    assert data["details"][0]["tree"]["chosen_path"]


def test_a_page_that_cannot_be_written_is_an_error_naming_it_and_the_answer_is_still_printed(run, tmp_path, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert cli.main(["report", str(run), "--out", str(blocked / "r.html")]) == 1
    assert f"out={str(blocked / 'r.html')!r} cannot be written" in capsys.readouterr().err
    assert cli.main(["solve", "What is 6 * 7?", "--backend", "fake", "--budget", "256",
                     "--report", str(blocked / "s.html")]) == 1
    out = capsys.readouterr()
    assert "answer: " in out.out and "report=" in out.err and "cannot be written" in out.err
