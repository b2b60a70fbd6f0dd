"""How good must a verifier be to beat majority by 5 points here? Synthetic verifiers on the real candidates.

The issue's selection target (+5 points over majority at 16 samples on the held-out arithmetic
problems) depends on how well a verifier ranks one problem's candidates (within-problem AUROC). This
bench keeps the real held-out and tuning candidates of bench.verifier (their answers and
correctness) and replaces the scores by synthetic ones of a chosen quality: a candidate's score is
sigmoid(d x correct + e) with e ~ N(0, 1), so two candidates of a problem are ranked right with
probability Phi(d / sqrt 2), the within-problem AUROC; a per-problem offset (N(0, 1)) is added so,
as with real verifiers, problems differ in level. For each quality it runs exactly the selection
of `ttc eval-verifier` (g of the combined rule fitted on the tuning problems, paired bootstrap
against majority, outvoted recovered), averaged over a few synthetic draws. Seconds of CPU.

    python -m bench.verifier_ceiling [--out bench/out/verifier]   # after bench.verifier made the label files
"""
from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from statistics import NormalDist

from bench.provenance import provenance

QUALITIES = (0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95)


def synthetic_scores(records, target: float, rng: random.Random) -> list[list[list[float]]]:
    """Per record, per candidate, one score of within-problem AUROC about `target`."""
    d = math.sqrt(2) * NormalDist().inv_cdf(target)
    out = []
    for r in records:
        offset = rng.gauss(0, 1)
        out.append([[1 / (1 + math.exp(-(d * bool(s["correct"]) + offset + rng.gauss(0, 1))))] for s in r["samples"]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/verifier")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    from ttc.evaluation.labeling import read_labels
    from ttc.evaluation.verifier_eval import candidates_of, metrics

    out = Path(args.out)
    held = read_labels(out / "heldout_deduped.jsonl")
    tuning = read_labels(out / "tuning" / "labels.jsonl")
    rows = []
    print(f"{len(held)} held-out problems, {len(tuning)} tuning problems, {args.samples} samples; "
          f"{args.draws} synthetic draws per quality")
    print(f"{'target AUROC':>12} {'measured':>9} {'g':>5} {'combined gain':>14} {'CI low':>7} {'weighted gain':>14} "
          f"{'outvoted recovered':>19}")
    for quality in QUALITIES:
        acc = {"within": [], "g": [], "gain": [], "low": [], "weighted": [], "share": []}
        for draw in range(args.draws):
            rng = random.Random(1000 * draw + round(quality * 100))
            scores = synthetic_scores(held, quality, rng)
            tune = candidates_of(tuning, synthetic_scores(tuning, quality, rng), args.samples, 0)
            m = metrics(held, scores, tune, args.samples)
            combined = m["rules"]["combined"]
            acc["within"].append(m["within_problem_auroc"])
            acc["g"].append(m["verifier_weight"])
            acc["gain"].append(combined["gain_points"])
            acc["low"].append(combined["ci_low"])
            acc["weighted"].append(m["rules"]["weighted"]["gain_points"])
            acc["share"].append(combined["share"])
        mean = {k: sum(v) / len(v) for k, v in acc.items()}
        rows.append({"target_within_auroc": quality, **{k: round(v, 4) for k, v in mean.items()}})
        print(f"{quality:>12.2f} {mean['within']:>9.3f} {mean['g']:>5.2f} {mean['gain']:>+14.1f} {mean['low']:>+7.1f} "
              f"{mean['weighted']:>+14.1f} {mean['share']:>19.1%}")
    reach = next((r["target_within_auroc"] for r in rows if r["gain"] >= 5 and r["low"] > 0), None)
    print(json.dumps({"bench": "verifier_ceiling", "held_out_problems": len(held), "rows": rows,
                      "within_auroc_needed_for_5_points": reach, **provenance()}))


if __name__ == "__main__":
    main()
