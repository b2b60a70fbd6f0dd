"""`ttc label` on the fake backend: records round-trip, resume, refuse other settings, and fail clearly."""
from __future__ import annotations

import json

import pytest

from ttc.cli import main
from ttc.core.errors import ConfigError
from ttc.evaluation.labeling import label_recipe, problem_of, read_labels, summarize, trajectories_of
from ttc.evaluation.recipe import load_recipe

RECIPE = """
name: labels
generator:
  backend: fake
  options: {{answers: {{"42": 0.5, "7": 0.5}}}}
dataset: {{source: {source}}}
sampling: {{max_tokens: 64}}
strategy: {{name: best_of_n}}
budget: 512
output: {out}
label: {{samples: 4, continuations: 8, threshold: 0.5}}
"""


@pytest.fixture
def recipe_file(tmp_path, answer_42_dataset):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(source=answer_42_dataset, out=tmp_path / "out"))
    return path


def test_labels_round_trip_and_resume(recipe_file, tmp_path):
    summary = label_recipe(load_recipe(recipe_file), progress=False)
    assert summary["problems"] == 3 and summary["samples"] == 12 and summary["labelled_now"] == 3
    records = read_labels(tmp_path / "out" / "labels.jsonl")
    for r in records:
        assert r["policy"]["model"] == "fake" and r["fingerprint"] and r["usage"]["generated_tokens"] > 0
        for s, t in zip(r["samples"], trajectories_of(r)):
            assert len(s["j"]) == len(s["steps"]) == len(t.steps) and "".join(s["steps"]) == t.text
            # the last step of a finished sample: J is its correctness; the others are estimates in [0, 1]
            assert s["j"][-1] == float(s["correct"]) and all(0.0 <= v <= 1.0 for v in s["j"])
            assert s["labels"] == [int(v >= 0.5) for v in s["j"]]
        assert problem_of(r).reference == "42"
    # J near 0.5 here: the fake answers 42 half the time whatever the prefix.
    assert 0.3 < summary["mean_j"] < 0.7 and summary["continuation_tokens"] > summary["sample_tokens"]
    again = label_recipe(load_recipe(recipe_file), progress=False)
    assert again["labelled_now"] == 0 and again["problems"] == 3  # resumed: nothing redone
    with pytest.raises(ConfigError, match="other settings"):
        label_recipe(load_recipe(recipe_file, {"label.continuations": 2}), progress=False)


def test_outcome_only_labels_cost_no_continuations(recipe_file):
    s = label_recipe(load_recipe(recipe_file, {"label.continuations": 0, "output": str(recipe_file.parent / "o2")}),
                     progress=False)
    assert s["continuation_tokens"] == 0 and s["intermediate_steps_labelled"] == 0


def test_label_errors_are_clear(recipe_file, tmp_path, capsys):
    # arithmetic problems have references; a file without an answer column has none
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"id": "x", "problem": "Q?"}) + "\n")
    path = tmp_path / "r2.yaml"
    path.write_text(RECIPE.format(source=bare, out=tmp_path / "o3"))
    with pytest.raises(ConfigError, match="needs a reference answer"):
        label_recipe(load_recipe(path), progress=False)
    assert main(["label", str(path), "--no-progress"]) == 2
    assert "needs a reference answer" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="does not exist"):
        read_labels(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match="holds no labelled problems"):
        read_labels(tmp_path / "empty.jsonl")
    (tmp_path / "other.jsonl").write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(ConfigError, match="not a label record"):
        read_labels(tmp_path / "other.jsonl")


def test_summary_counts_balance():
    record = {"id": "a", "usage": {"generated_tokens": 30, "prompt_tokens": 5, "cached_prompt_tokens": 0},
              "samples": [{"j": [1.0, 0.25, 1.0], "labels": [1, 0, 1], "correct": True, "num_tokens": 10},
                          {"j": [None, 0.0], "labels": [None, 0], "correct": False, "num_tokens": 10}]}
    s = summarize([record])
    assert s["intermediate_steps_labelled"] == 2 and s["positive_step_share"] == 0.5 and s["mean_j"] == 0.625
    assert s["sample_accuracy"] == 0.5 and s["continuation_tokens"] == 10
