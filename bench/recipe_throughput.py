"""Recipe throughput: the quickstart's problems run concurrently (as `ttc run` does) vs one at a time.

Both runs use the same runner and one already-started engine (start-up is not
timed), and differ only in the recipe's `max_concurrent_problems`. Prints a table and, as
its last line, one JSON object with both wall times and `speedup`.

    python -m bench.recipe_throughput [--budget 512] [--per-level 8] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.provenance import provenance

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=512, help="per-problem token budget")
    parser.add_argument("--per-level", type=int, default=8, help="problems per arithmetic level (4 levels)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    from ttc.engine import Engine
    from ttc.evaluation.recipe import load_recipe
    from ttc.evaluation.runner import run_recipe

    # The four levels its figures were measured on (the quickstart itself now runs two).
    overrides = {"budget": args.budget, "dataset.per_level": args.per_level,
                 "dataset.levels": ["add1", "add2", "mul1", "mul2"],
                 "strategy": [{"name": "best_of_n", "selection": "majority", "label": "majority"}]}
    base = load_recipe(QUICKSTART, overrides)
    engine = Engine(base.engine_config()).start()

    def timed(concurrency: int) -> tuple[float, int, float]:
        with tempfile.TemporaryDirectory() as out:
            recipe = load_recipe(QUICKSTART, {**overrides, "max_concurrent_problems": concurrency, "output": out})
            engine.config.max_concurrent_problems = concurrency
            engine._problem_slots = None  # the engine's semaphore follows the recipe's concurrency
            t = time.perf_counter()
            summary = run_recipe(recipe, engine=engine, progress=False, make_plots=False)
            wall = time.perf_counter() - t
        row = summary["table"][0]
        return wall, row["problems"], row["accuracy"]

    timed(64)  # warm-up
    rows = []
    for r in range(args.repeats):
        for name, conc in (("concurrent", 64), ("one_at_a_time", 1)):
            wall, problems, acc = timed(conc)
            rows.append((name, wall))
            print(f"round {r}  {name:14s} {wall:7.2f} s  {problems} problems  accuracy {acc:.1%}", flush=True)
    engine.close()
    conc = statistics.median(w for n, w in rows if n == "concurrent")
    serial = statistics.median(w for n, w in rows if n == "one_at_a_time")
    result = {"bench": "recipe_throughput", "problems": 4 * args.per_level, "budget": args.budget,
              "repeats": args.repeats, "concurrent_wall_s": round(conc, 3), "one_at_a_time_wall_s": round(serial, 3),
              "speedup": round(serial / conc, 3), **provenance()}
    print(f"\nconcurrent {conc:.1f} s vs one at a time {serial:.1f} s: speedup {result['speedup']:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
