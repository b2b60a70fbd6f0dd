"""Learned verifier: label, train and evaluate on the embedded model, end to end.

Runs `recipes/verifier_pipeline.yaml` (`ttc verifier-pipeline`: Monte-Carlo step labels on
calibration problems, a probe verifier trained on them, evaluation on held-out problems
against majority voting and the baselines, beam search with the trained verifier against
best-of-N majority) and prints its figures; its last line is one JSON object with
`n_eval_problems`, `within_problem_auroc`, `gain_points` (best rule minus majority at 16
samples), `gain_ci_low`, `outvoted_recovered`, `label_tokens`, `train_seconds`, and the
search comparison. Overrides go to the recipe, e.g. for a quick look:

    python -m bench.verifier [evaluate_verifier.heldout.per_level=250 dataset.per_level=100 ...]
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bench.provenance import provenance

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "verifier_pipeline.yaml"
# Labels recorded by an earlier run of this bench (same recipe, same settings fingerprint): labelling is
# most of its CPU time, so a fresh output folder starts from them and labels only what they lack.
RECORDED = Path(__file__).resolve().parent / "data" / "verifier"
SEEDS = {"calibration_labels.jsonl.gz": "labels.jsonl", "heldout_labels.jsonl.gz": "heldout/labels.jsonl",
         "tuning_labels.jsonl.gz": "tuning/labels.jsonl"}


def seed_labels(out: Path) -> None:
    import gzip
    import shutil

    for src, dst in SEEDS.items():
        source, target = RECORDED / src, out / dst
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(source, "rb") as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            print(f"bench.verifier: starting {target} from the recorded {source.name}", flush=True)


def main() -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from ttc.core.config import parse_assignments
    from ttc.evaluation.recipe import load_recipe
    from ttc.evaluation.verifier_pipeline import run_pipeline

    overrides = {"output": "bench/out/verifier", **parse_assignments(sys.argv[1:])}
    recipe = load_recipe(RECIPE, overrides)
    seed_labels(recipe.output_dir())
    result = run_pipeline(recipe, log=lambda m: print(m, flush=True))
    t = result["evaluations"]["trained"]
    best = "combined"  # chosen before looking: its weight g is fitted on the tuning problems, not held-out ones
    line = {
        "bench": "verifier", "n_eval_problems": result["n_eval_problems"],
        "within_problem_auroc": t["within_problem_auroc"], "outcome_auroc": t["outcome_auroc"],
        "step_auroc": t["step_auroc"], "best_rule": best, "gain_points": t["rules"][best]["gain_points"],
        "gain_ci_low": t["rules"][best]["ci_low"], "outvoted_recovered": t["rules"][best]["share"],
        "wins_losses": [t["rules"][best]["wins"], t["rules"][best]["losses"]],
        "majority_accuracy": t["rules"]["majority"]["accuracy"], "verifier_weight": t["verifier_weight"],
        "label_tokens": result["labels"]["generated_tokens"], "train_seconds": result["training"]["train_seconds"],
        "baselines": {name: {"within_problem_auroc": m["within_problem_auroc"],
                             "gains": {r: v.get("gain_points") for r, v in m["rules"].items() if r != "majority"}}
                      for name, m in result["evaluations"].items() if name != "trained"},
        "search": result.get("search"), "overrides": overrides, **provenance(),
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
