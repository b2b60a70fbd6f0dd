"""MRT and budget forcing on the embedded model: accuracy and tokens against fixed-length thinking.

On arithmetic problems (levels add1, add2, mul1, mul2), at two budgets B of generated tokens per
problem, one recipe run per budget with four strategies (answers forced with `answer_tokens`):
- **fixed-length thinking**: one trace that thinks until it stops or reaches B - answer_tokens, then
  answers (`repeated_sampling`, n 1, `budget_forcing` with only a maximum);
- **budget forcing**: one trace made to think the whole length (minimum = maximum, s1's "Wait");
- **mrt**: one trace an episode at a time with forced answers at each boundary, stopped when
  progress stops (its forced answers are charged: all counted in its tokens);
- **best-of-N majority** with as many 128-token samples as B pays for.
Prints accuracy and mean generated tokens per problem; the last line is one JSON object with
`token_saving_at_equal_accuracy`: the tokens mrt needs to reach fixed-length thinking's accuracy at
the larger budget (linear in log tokens between mrt's two points), over fixed-length thinking's
tokens there (below 1: mrt is cheaper; None: mrt never reaches it), and every accuracy.

    python -m bench.mrt [--per-level 10] [--budgets 256 512] [--out bench/out/mrt]
    python -m bench.mrt --mrt-set patience=1 --mrt-set progress_threshold=0.25   # an mrt variant, same folder:
                                                  # the other strategies' results are reused
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

from bench.provenance import provenance

ANSWER_TOKENS = 16
FORCED_ANSWERS = 4


def strategies(budget: int, mrt_options: dict | None = None, mrt_label: str = "mrt") -> list[dict]:
    thinking = budget - ANSWER_TOKENS
    # mrt keeps room for one boundary's forced answers and its final answer
    mrt_thinking = budget - (FORCED_ANSWERS + 1) * ANSWER_TOKENS
    return [
        {"name": "repeated_sampling", "n": 1, "label": "fixed-length thinking",
         "budget_forcing": {"max_thinking_tokens": thinking, "answer_tokens": ANSWER_TOKENS}},
        {"name": "repeated_sampling", "n": 1, "label": "budget forcing",
         "budget_forcing": {"min_thinking_tokens": thinking, "max_thinking_tokens": thinking,
                            "answer_tokens": ANSWER_TOKENS}},
        {"name": "mrt", "label": mrt_label, "max_tokens": 64, "forced_answers": FORCED_ANSWERS,
         "thinking": {"max_thinking_tokens": mrt_thinking, "answer_tokens": ANSWER_TOKENS}, **(mrt_options or {})},
        {"name": "best_of_n", "selection": "majority", "max_tokens": 128, "label": "best-of-N majority"},
    ]


def recipe_data(budget: int, per_level: int, seed: int, out: Path, mrt_options: dict | None = None,
                mrt_label: str = "mrt") -> dict:
    return {
        "name": f"mrt_b{budget}", "generator": {"backend": "vllm"},
        "dataset": {"source": "arithmetic", "levels": ["add1", "add2", "mul1", "mul2"], "per_level": per_level,
                    "seed": seed},
        "sampling": {"temperature": 0.8}, "strategy": strategies(budget, mrt_options, mrt_label), "budget": [budget],
        "output": str(out / f"b{budget}"),
    }


def curves(records: list[dict]) -> dict[str, list[dict]]:
    """Per strategy label: one point per budget, accuracy and mean generated tokens per problem."""
    cells = defaultdict(list)
    for r in records:
        cells[(r["strategy"], int(r["budget"]["generated_tokens"]))].append(
            (float(bool(r["correct"])), r["usage"]["generated_tokens"]))
    out = defaultdict(list)
    for (label, budget), rows in sorted(cells.items()):
        out[label].append({"budget": budget, "problems": len(rows), "accuracy": sum(a for a, _ in rows) / len(rows),
                           "tokens": sum(t for _, t in rows) / len(rows)})
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs=2, default=[256, 512])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="bench/out/mrt")
    parser.add_argument("--mrt-set", dest="mrt_sets", action="append", default=[], metavar="KEY=VALUE",
                        help="an mrt option of a variant (repeatable); its label names them")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from ttc.calibrate import tokens_to_reach
    from ttc.core.config import parse_assignments
    from ttc.engine import Engine
    from ttc.evaluation.recipe import parse_recipe
    from ttc.evaluation.results import ResultsLog
    from ttc.evaluation.runner import run_recipe

    out = Path(args.out)
    mrt_options = parse_assignments(args.mrt_sets)
    mrt_label = "mrt" + (f" ({', '.join(args.mrt_sets)})" if args.mrt_sets else "")
    recipes = [parse_recipe(recipe_data(b, args.per_level, args.seed, out, mrt_options, mrt_label))
               for b in args.budgets]
    engine = Engine(recipes[0].engine_config()).start()
    t0 = time.perf_counter()
    records = []
    for recipe in recipes:
        run_recipe(recipe, engine=engine, progress=False, make_plots=False)
        records += ResultsLog(recipe.output_dir() / "results.jsonl").load()
    engine.close()
    wall = time.perf_counter() - t0
    by = curves(records)
    print("accuracy and mean generated tokens per problem:")
    for label, points in by.items():
        print(f"  {label:<24} " + "  ".join(f"B={p['budget']}: {p['accuracy']:.1%} @ {p['tokens']:.0f}" for p in points))
    mrt = [r for r in records if r["strategy"] == mrt_label]
    if mrt:
        episodes = [e for r in mrt for e in r["metrics"].get("episodes", [])]
        ends = defaultdict(int)
        for r in mrt:
            for end in r["metrics"].get("ends", []):
                ends[end] += 1
        print(f"  {mrt_label}: {sum(episodes) / max(len(episodes), 1):.1f} episodes per trace; ends {dict(ends)}")
        for b in args.budgets:
            cell = [r for r in mrt if int(r["budget"]["generated_tokens"]) == b]
            own = [bool(c["correct"]) for r in cell for c in r["candidates"]]
            forced = [r["metrics"].get("forced_answer_tokens", 0) for r in cell]
            print(f"    B={b}: the vote {sum(bool(r['correct']) for r in cell) / max(len(cell), 1):.1%}, the trace's own "
                  f"final answer {sum(own) / max(len(own), 1):.1%}; forced answers "
                  f"{sum(forced) / max(len(forced), 1):.0f} tokens per problem")
    fixed = by.get("fixed-length thinking", [])
    top = fixed[-1] if fixed else None
    need = tokens_to_reach(by.get(mrt_label, []), top["accuracy"]) if top else None
    saving = None if need is None or not top["tokens"] else round(need / top["tokens"], 3)
    print(f"\ntoken_saving_at_equal_accuracy (mrt tokens to reach fixed-length thinking's "
          f"{top['accuracy']:.1%} at B={top['budget']}, over its {top['tokens']:.0f}): {saving}" if top else "")
    summary = {"bench": "mrt", "mrt": mrt_label, "problems": len({r['id'] for r in records}), "budgets": args.budgets,
               "token_saving_at_equal_accuracy": saving,
               "accuracy": {label: [round(p["accuracy"], 4) for p in points] for label, points in by.items()},
               "tokens": {label: [round(p["tokens"], 1) for p in points] for label, points in by.items()},
               "wall_s": round(wall, 1), **provenance()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
