"""The shipped quickstart recipe on the real embedded model, cut to a handful of problems."""
import json
from pathlib import Path

import pytest

from ttc.evaluation.recipe import load_recipe
from ttc.evaluation.results import ResultsLog
from ttc.evaluation.runner import run_recipe

pytestmark = pytest.mark.integration
QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"


def test_quickstart_on_a_handful_of_problems(real_engine, tmp_path):
    recipe = load_recipe(QUICKSTART, {"dataset.per_level": 1, "budget": [128, 512], "output": str(tmp_path)})
    summary = run_recipe(recipe, engine=real_engine, progress=False)
    records = ResultsLog(tmp_path / "results.jsonl").load()
    assert len(records) == 4 * 2 * 2  # strategies x budgets x problems
    for r in records:
        assert r["usage"]["generated_tokens"] <= r["budget"]["generated_tokens"]
        assert r["correct"] in (True, False)
    assert all(len(r["candidates"]) == 1 for r in records if r["strategy"] == "one sample")
    weighted = [r for r in records if r["strategy"] == "best-of-N weighted"]
    assert all(c["score"] is not None and 0 < c["score"] <= 1 for r in weighted for c in r["candidates"])
    # The beam search is guided by mean_logprob, which needs every step's token logprobs.
    beams = [r for r in records if r["strategy"] == "beam search"]
    assert len(beams) == 4 and all(any(e["event"] == "step" for e in r["trace"]) for r in beams)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["table"]) == 8 and summary["plots"]
    assert summary["report"] and (tmp_path / "report.html").stat().st_size > 10_000
