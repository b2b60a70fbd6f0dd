"""A small run on the fakes for the report's tests: best-of-N, beam search and particle filtering at two
budgets on six problems of two levels, with references the fake model sometimes hits."""
from __future__ import annotations

import json
from pathlib import Path

from ttc.evaluation.recipe import parse_recipe
from ttc.evaluation.runner import run_recipe


def make_run(folder: Path, *, report: bool = True) -> Path:
    data = folder / "problems.jsonl"
    rows = [{"id": f"p{i}", "problem": f"Question {i}?", "answer": "42" if i % 2 else "41",
             "level": "easy" if i < 3 else "hard"} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = parse_recipe({
        "name": "report_fixture", "generator": {"backend": "fake", "options": {"seed": 3}},
        "verifier": {"name": "fake"},
        "dataset": {"source": str(data)}, "sampling": {"max_tokens": 48},
        "strategy": [{"name": "best_of_n", "selection": "majority", "label": "majority"},
                     {"name": "beam_search", "n": 4, "beam_width": 2, "max_step_tokens": 16, "max_steps": 3},
                     {"name": "particle_filtering", "n": 4, "max_step_tokens": 16, "max_steps": 3}],
        "budget": [192, 384], "output": str(folder / "run"),
    })
    run_recipe(recipe, progress=False, make_plots=report)
    return folder / "run"
