"""`ttc mrt-label` on scripted traces whose J is known: the export's format and values, resume,
the plot, and clear errors."""
from __future__ import annotations

import json

import pytest

from ttc.cli import main
from ttc.core.errors import ConfigError
from ttc.engine import Engine
from ttc.evaluation.mrt_labeling import mrt_label_recipe
from ttc.evaluation.recipe import load_recipe
from ttc.evaluation.results import ResultsLog
from ttc.testing import FakeGenerator, thinking_script

RECIPE = """
name: mrt_labels
generator: {{backend: fake}}
dataset: {{source: {source}}}
sampling: {{max_tokens: 64}}
strategy: {{name: best_of_n}}
budget: 512
output: {out}
mrt_label: {{traces: 2, continuations: 4, episodes: {{min_chars: 0}}}}
"""
# Wrong before thinking and after one episode, right after two; the trace then boxes 42.
SCRIPT = thinking_script([{"7": 1.0}, {"7": 1.0}, {"42": 1.0}])


@pytest.fixture
def recipe_file(tmp_path, answer_42_dataset):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(source=answer_42_dataset, out=tmp_path / "out"))
    return path


def engine():
    return Engine(backend="fake", generator=FakeGenerator(SCRIPT))


def test_export_values_on_known_j(recipe_file, tmp_path):
    summary = mrt_label_recipe(load_recipe(recipe_file), engine=engine(), progress=False)
    assert (summary["problems"], summary["traces"], summary["episodes"]) == (3, 6, 12)
    assert summary["mean_j0"] == 0.0 and summary["mean_j_end"] == 1.0 and summary["trace_accuracy"] == 1.0
    records = ResultsLog(tmp_path / "out" / "mrt_labels.jsonl").load()
    assert len(records) == 3 and records[0]["policy"]["model"] == "fake" and records[0]["fingerprint"]
    for trace in (t for r in records for t in r["traces"]):
        assert trace["reward"] == 1.0 and trace["correct"] and trace["j0"] == 0.0
        assert "".join(e["text"] for e in trace["episodes"]) == trace["thinking"]
        assert [e["prefix"] for e in trace["episodes"]] == [trace["episodes"][0]["text"], trace["thinking"]]
        assert [e["j"] for e in trace["episodes"]] == [0.0, 1.0]
        assert [e["progress"] for e in trace["episodes"]] == [0.0, 1.0]
        assert [e["cumulative_regret"] for e in trace["episodes"]] == [1.0, 1.0]  # comparator: the best J, 1
        assert [e["advantage"] for e in trace["episodes"]] == [1.0, 0.0]  # reward 1 minus J of stopping there
        assert trace["episodes"][0]["forced_answers"] == ["7"] * 4
    assert (tmp_path / "out" / "mrt_j.png").stat().st_size > 1000
    again = mrt_label_recipe(load_recipe(recipe_file), engine=engine(), progress=False)
    assert again["labelled_now"] == 0 and again["problems"] == 3  # resumed
    with pytest.raises(ConfigError, match="other settings"):
        mrt_label_recipe(load_recipe(recipe_file, {"mrt_label.continuations": 2}), engine=engine(), progress=False)


def test_regret_comparators_and_charged_tokens(recipe_file, tmp_path):
    wrong = Engine(backend="fake", generator=FakeGenerator(thinking_script([{"7": 1.0}] * 3)))  # J is 0 throughout
    for comparator, regret in (("max_j", [0.0, 0.0]), ("one", [1.0, 2.0])):
        out = tmp_path / comparator
        overrides = {"mrt_label.regret_comparator": comparator, "output": str(out), "mrt_label.plot": None}
        summary = mrt_label_recipe(load_recipe(recipe_file, overrides), engine=wrong, progress=False)
        trace = ResultsLog(out / "mrt_labels.jsonl").load()[0]["traces"][0]
        assert [e["cumulative_regret"] for e in trace["episodes"]] == regret
        assert [e["advantage"] for e in trace["episodes"]] == [0.0, 0.0] and trace["reward"] == 0.0
        # 4 one-token forced answers for J0 (one prefix per problem, shared by its traces) and for J after
        # each of the 2 episodes of each trace, the last one too: a forced answer is always sampled
        assert summary["generated_tokens"] == summary["thinking_tokens"] + 3 * (1 + 2 * 2) * 4
        assert "plot" not in summary and not (out / "mrt_j.png").exists()


def test_cli_and_errors(recipe_file, tmp_path, capsys):
    data = tmp_path / "noref.jsonl"
    data.write_text(json.dumps({"id": "q", "problem": "Q?"}) + "\n")
    assert main(["mrt-label", str(recipe_file), f"dataset.source={data}", "--no-progress"]) == 2
    assert "needs a reference answer" in capsys.readouterr().err
    assert main(["mrt-label", str(recipe_file), "mrt_label.continuations=0", "--no-progress"]) == 2
    assert "mrt_label.continuations" in capsys.readouterr().err
