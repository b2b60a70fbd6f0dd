"""`ttc verifier-pipeline` end to end on the fake backend with a tiny random base model: every stage runs,
writes its files, and a rerun reuses the labels and the trained verifier."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from ttc.cli import main  # noqa: E402
from ttc.core.errors import ConfigError  # noqa: E402
from ttc.evaluation.recipe import load_recipe  # noqa: E402
from ttc.evaluation.verifier_pipeline import run_pipeline  # noqa: E402

from tests.unit.test_verifier_training import base_dir  # noqa: E402,F401  (the tiny checkpoint fixture)

RECIPE = """
name: vp
generator: {{backend: fake, options: {{answers: {{"42": 0.5, "7": 0.5}}}}}}
dataset: {{source: {cal}}}
sampling: {{max_tokens: 64}}
label: {{continuations: 2, max_prefixes: 2}}
train: {{base: {base}, l2: [0.01], layer: 2}}
evaluate_verifier:
  heldout: {{source: {held}}}
  tuning: {{source: {tune}}}
  samples: 4
  search: {{strategy: beam_search, problems: 3, budgets: [256], options: {{n: 4, beam_width: 2, max_tokens: 48}}}}
strategy: {{name: best_of_n}}
budget: 256
output: {out}
"""


def problems(path, prefix, n, extra=()):
    rows = [{"id": f"{prefix}{i}", "problem": f"{prefix} question {i}?", "answer": "42"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *extra]))
    return path


@pytest.fixture
def recipe_file(tmp_path, base_dir):  # noqa: F811
    cal = problems(tmp_path / "cal.jsonl", "c", 6)
    held = problems(tmp_path / "held.jsonl", "h", 5, extra=[{"id": "dup", "problem": "c question 0?", "answer": "42"}])
    tune = problems(tmp_path / "tune.jsonl", "t", 3)
    path = tmp_path / "vp.yaml"
    path.write_text(RECIPE.format(cal=cal, held=held, tune=tune, base=base_dir, out=tmp_path / "out"))
    return path


def test_pipeline_runs_every_stage_and_resumes(recipe_file, tmp_path):
    logs: list[str] = []
    result = run_pipeline(load_recipe(recipe_file), progress=False, log=logs.append)
    out = tmp_path / "out"
    for f in ("labels.jsonl", "heldout/labels.jsonl", "tuning/labels.jsonl", "heldout_deduped.jsonl",
              "verifier/ttc_verifier.json", "verifier_eval.json", "verifier_accuracy_vs_tokens.png"):
        assert (out / f).is_file(), f
    assert result["n_eval_problems"] == 5  # the held-out copy of a calibration prompt is left out
    trained = result["evaluations"]["trained"]
    assert trained["problems"] == 5 and set(trained["rules"]) == {"majority", "weighted", "best_of_n", "combined"}
    assert [p["k"] for p in trained["curve"]] == [1, 2, 4] and all(0 <= p["combined"] <= 1 for p in trained["curve"])
    assert set(result["evaluations"]) == {"mean_logprob", "trained"}
    search = result["search"]
    assert [r["budget"] for r in search] == [256] * 3 and all(r["problems"] == 3 for r in search)
    assert all(r["mean_generated_tokens"] <= 256 for r in search)
    assert any(r["mean_verifier_tokens"] > 0 for r in search if "trained" in r["strategy"])
    logs.clear()
    run_pipeline(load_recipe(recipe_file), progress=False, log=logs.append)
    assert any("reusing" in m for m in logs)  # the verifier is not trained again


def test_pipeline_needs_heldout_problems(recipe_file, capsys):
    recipe = load_recipe(recipe_file, {"evaluate_verifier.heldout": None})
    with pytest.raises(ConfigError, match="evaluate_verifier.heldout"):
        run_pipeline(recipe, progress=False)
    assert main(["verifier-pipeline", str(recipe_file), "evaluate_verifier.heldout=null", "--no-progress"]) == 2
