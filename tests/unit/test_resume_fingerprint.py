"""Results know what made them: a resumed run reuses only lines made with its own settings."""
from __future__ import annotations

import json

import pytest

from ttc.core.errors import ConfigError
from ttc.evaluation.recipe import parse_recipe
from ttc.evaluation.results import ResultsLog
from ttc.evaluation.runner import run_recipe

BASE = {
    "name": "t",
    "generator": {"backend": "fake"},
    "dataset": {"source": "arithmetic", "levels": ["add1"], "per_level": 3},
    "sampling": {"max_tokens": 32},
    "strategy": {"name": "best_of_n", "selection": "majority"},
    "budget": 64,
}


def run(tmp_path, overrides=None, **changes):
    data = {**BASE, "output": str(tmp_path / "out"), **changes}
    return run_recipe(parse_recipe(data, overrides), progress=False, make_plots=False)


def lines(tmp_path):
    return ResultsLog(tmp_path / "out" / "results.jsonl").load()


def test_a_changed_setting_is_refused_not_reported_as_the_old_results(tmp_path):
    """The audit's case: the same recipe again with another dataset seed and max_tokens."""
    run(tmp_path)
    before = lines(tmp_path)
    with pytest.raises(ConfigError, match=r"holds results made with other settings .*'best_of_n\[selection=majority\]@64' \(3\)"):
        run(tmp_path, {"dataset.seed": 1, "sampling.max_tokens": 16})
    assert lines(tmp_path) == before  # nothing run, nothing lost


@pytest.mark.parametrize("change", [{"sampling": {"max_tokens": 32, "temperature": 0.5}},
                                    {"generator": {"backend": "fake", "options": {"seed": 5}}},
                                    {"system_prompt": "Be brief."}, {"seeds": [0], "budget": 64,
                                                                     "dataset": {"source": "arithmetic",
                                                                                 "levels": ["add1"], "per_level": 3,
                                                                                 "seed": 2}}])
def test_every_kind_of_setting_is_part_of_the_fingerprint(tmp_path, change):
    run(tmp_path)
    with pytest.raises(ConfigError, match="other settings"):
        run(tmp_path, **change)


def test_same_settings_resume_and_speed_settings_do_not_matter(tmp_path):
    run(tmp_path)
    first = lines(tmp_path)
    run(tmp_path, max_concurrent_problems=1)  # how fast, not what: everything is reused
    assert lines(tmp_path) == first
    assert {r["settings"] for r in first} and all(len(r["fingerprint"]) == 16 for r in first)


def test_an_edited_problem_is_not_taken_for_the_old_one(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "q1", "problem": "What is 1+1?", "answer": "2"}) + "\n")
    run(tmp_path, dataset={"source": str(data)})
    data.write_text(json.dumps({"id": "q1", "problem": "What is 2+2?", "answer": "4"}) + "\n")
    with pytest.raises(ConfigError, match="other settings \\(or other problems\\)"):
        run(tmp_path, dataset={"source": str(data)})


def test_results_written_before_fingerprints_are_not_reused(tmp_path):
    run(tmp_path)
    path = tmp_path / "out" / "results.jsonl"
    old = [{k: v for k, v in r.items() if k not in ("settings", "fingerprint")} for r in lines(tmp_path)]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    with pytest.raises(ConfigError, match="other settings"):
        run(tmp_path)
