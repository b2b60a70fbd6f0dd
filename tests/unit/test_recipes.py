"""Recipe schema, overrides, every shipped recipe dry-run on the fakes, and the run outputs."""
import json
from pathlib import Path

import pytest
import yaml

from ttc import cli
from ttc.core.errors import ConfigError
from ttc.evaluation.recipe import load_recipe, parse_recipe
from ttc.evaluation.results import ResultsLog
from ttc.evaluation.runner import expand, run_recipe

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "recipes").rglob("*.yaml"))

GOOD = {
    "name": "t",
    "generator": {"backend": "fake"},
    "dataset": {"source": "arithmetic", "levels": ["add1"], "per_level": 3},
    "sampling": {"max_tokens": 32},
    "strategy": {"name": "best_of_n", "selection": "majority"},
    "budget": [32, 128],
}


def recipe(tmp_path, **changes):
    data = {**GOOD, "output": str(tmp_path / "out"), **changes}
    return parse_recipe(data)


def test_shipped_recipes_exist_for_quickstart_and_math500():
    names = {p.relative_to(ROOT / "recipes").as_posix() for p in SHIPPED}
    assert "quickstart.yaml" in names and any(n.startswith("math500/") for n in names)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_every_shipped_recipe_validates_and_dry_runs_on_fakes(path, tmp_path):
    from ttc.cli import dry_run_overrides

    overrides = {**dry_run_overrides(load_recipe(path), str(tmp_path)), "dataset.limit": 2}
    r = load_recipe(path, overrides)
    summary = run_recipe(r, progress=False, make_plots=False)
    configs = expand(r)
    assert [row["config"] for row in summary["table"]] == [c.label for c in configs]
    assert all(row["problems"] == 2 for row in summary["table"])


@pytest.mark.parametrize("change, fragments", [
    ({"strategy": {"name": "beam"}}, ["strategy.name: unknown strategy 'beam'"]),
    ({"budget": -5}, ["budget.generated_tokens must be positive, got -5"]),
    ({"budget": "lots"}, ["budget", "'lots'"]),
    ({"dataset": None}, ["dataset", "None"]),
    ({"datset": {"source": "arithmetic"}}, ["unknown option 'datset'", "did you mean 'dataset'"]),
    ({"strategy": {"name": "best_of_n", "selection": "best", "nn": 3}},
     ["strategy.selection", "'best'", "unknown option 'strategy.nn'", "did you mean 'n'"]),
    ({"max_concurrent_problems": 0}, ["max_concurrent_problems", "got 0"]),
    ({"generator": {"backend": "vllm2"}}, ["generator.backend", "did you mean 'vllm'"]),
    ({"verifier": {"name": "prm9"}}, ["verifier.name: unknown verifier 'prm9'"]),
    ({"strategy": {"name": "best_of_n", "selection": "weighted"}}, ["needs a verifier"]),
    ({"budget": 8, "sampling": {"max_tokens": 32}}, ["budget=8 generated tokens cannot pay for one sample"]),
    ({"seeds": []}, ["seeds"]),
])
def test_bad_recipes_name_key_path_and_value(tmp_path, change, fragments):
    with pytest.raises(ConfigError) as info:
        recipe(tmp_path, **change)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_all_problems_are_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as info:
        recipe(tmp_path, max_concurrent_problems=0, seeds=[], colour="red")
    assert len(info.value.problems) == 3


def test_empty_dataset_is_reported(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = recipe(tmp_path, dataset={"source": str(empty)})
    with pytest.raises(ConfigError, match="empty"):
        run_recipe(r, progress=False)


def test_overrides_reach_nested_and_listed_keys(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "output": str(tmp_path / "o")}))
    r = load_recipe(path, {"strategy.n": 16, "dataset.per_level": 5, "budget": [1024]})
    assert r.strategies[0].options["n"] == 16 and r.dataset.per_level == 5
    assert [b.generated_tokens for b in r.budgets] == [1024]
    with pytest.raises(ConfigError, match="strategy.temperature"):
        load_recipe(path, {"sampling.temperature": -1})


@pytest.mark.parametrize("text, fragment", [
    ("name: [unclosed", "not valid YAML at line 1"),
    ("- just\n- a list\n", "a recipe must be a YAML mapping"),
])
def test_unreadable_files_are_config_errors(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_recipe(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_cli_run_bad_recipe_exits_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "budget": 0}))
    assert cli.main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "budget.generated_tokens must be positive" in err and "Traceback" not in err


def test_run_writes_results_metrics_and_plots_and_resumes_without_duplicates(tmp_path):
    r = recipe(tmp_path, strategy=[{"name": "best_of_n", "label": "maj"}, {"name": "repeated_sampling"}])
    summary = run_recipe(r, progress=False)
    out = tmp_path / "out"
    records = ResultsLog(out / "results.jsonl").load()
    assert len(records) == 2 * 2 * 3  # strategies x budgets x problems
    rec = records[0]
    assert {"config", "id", "answer", "correct", "usage", "candidates"} <= set(rec)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["config"] for row in metrics["table"]] == ["maj@32", "maj@128", "repeated_sampling@32",
                                                           "repeated_sampling@128"]
    assert "scaling" in metrics["configs"]["maj@128"] and "scaling" not in metrics["configs"]["maj@32"]
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 1000
    assert summary["table"] == metrics["table"]
    # A second run finds everything done: nothing is added or duplicated.
    run_recipe(r, progress=False)
    assert len(ResultsLog(out / "results.jsonl").load()) == len(records)


def test_torn_last_line_is_dropped_and_that_problem_reruns(tmp_path):
    r = recipe(tmp_path)
    run_recipe(r, progress=False, make_plots=False)
    path = tmp_path / "out" / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:25])  # a kill in the middle of the last write
    assert len(ResultsLog(path).load()) == len(lines) - 1
    run_recipe(r, progress=False, make_plots=False)
    records = ResultsLog(path).load()
    keys = [(x["config"], x["id"]) for x in records]
    assert len(records) == len(lines) and len(set(keys)) == len(keys)


def test_failed_problems_go_to_errors_and_rerun(tmp_path):
    r = recipe(tmp_path, generator={"backend": "fake", "options": {"fail_on_call": 2}}, budget=64)
    run_recipe(r, progress=False, make_plots=False)
    out = tmp_path / "out"
    assert len(ResultsLog(out / "results.jsonl").load()) == 2
    assert len(ResultsLog(out / "errors.jsonl").load()) == 1
    run_recipe(r, progress=False, make_plots=False)  # a fresh engine: the one problem left succeeds now
    assert len(ResultsLog(out / "results.jsonl").load()) == 3


def test_relative_dataset_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "data.jsonl").write_text('{"problem": "What is 1+1?", "answer": "2"}\n')
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**GOOD, "dataset": {"source": "data.jsonl"},
                                                     "budget": 64, "output": str(tmp_path / "o")}))
    monkeypatch.chdir("/")
    summary = run_recipe(load_recipe(tmp_path / "r.yaml"), progress=False, make_plots=False)
    assert summary["table"][0]["problems"] == 1


def test_progress_line_shows_accuracy_tokens_and_rate_even_when_backend_bars_are_silenced(monkeypatch, capsys):
    from ttc.evaluation.runner import Progress

    monkeypatch.setenv("TQDM_DISABLE", "1")  # what the CLI sets to hush vLLM's own bars
    bar = Progress(2, enabled=True)
    bar.update({"usage": {"generated_tokens": 100}, "correct": True})
    bar.update(None)
    bar.close()
    err = capsys.readouterr().err
    assert "acc=100.0%" in err and "tokens=100" in err and "tok/s=" in err and "errors=1" in err


def test_pooled_budget_runs_auto_under_one_budget_per_configuration(tmp_path):
    r = recipe(tmp_path, strategy={"name": "auto", "probe_samples": 2}, budget=[256], pooled_budget=True,
               generator={"backend": "fake", "options": {"answers": {"3": 0.5, "4": 0.5}}})
    summary = run_recipe(r, progress=False, make_plots=False)
    records = ResultsLog(tmp_path / "out" / "results.jsonl").load()
    assert len(records) == 3 and summary["table"][0]["problems"] == 3
    assert sum(x["usage"]["generated_tokens"] for x in records) <= 256 * 3
    assert all("budget_share" in x["metrics"] or x["metrics"]["decision"] == "stop_after_probe" for x in records)
    with pytest.raises(ConfigError, match="pooled_budget: true needs strategy 'auto'"):
        recipe(tmp_path, pooled_budget=True)


def test_a_non_utf8_recipe_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 9\)"):
        load_recipe(path)


def test_schema_and_component_problems_are_reported_in_one_round(tmp_path):
    """A bad field of the recipe's own schema and a bad strategy option, both in the first error."""
    with pytest.raises(ConfigError) as err:
        recipe(tmp_path, max_concurrent_problems=0, strategy={"name": "best_of_n", "n": 0})
    text = str(err.value)
    assert "max_concurrent_problems" in text and "strategy.n" in text
