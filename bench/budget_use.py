"""Budget use: does every strategy spend the budget it is given, and never more?

Every strategy with its defaults (n left out: sized by the budget) on arithmetic
problems at several generated-token budgets, on the embedded model through vLLM,
with self-evaluation as the scorer where a strategy needs one. Prints a table of
accuracy, mean generated tokens and the mean share of the budget used per cell;
its last line is one JSON object with `median_budget_used` (over strategy x
budget cells; target >= 0.8), `min_budget_used` and `overspend` (problems whose
spend passed a cap, per dimension; target 0), plus the commit it ran on.

    python -m bench.budget_use [--problems 32] [--budgets 1024 4096 16384] [--strategies ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from bench.provenance import provenance

STRATEGIES = ["repeated_sampling", "best_of_n", "beam_search", "dvts", "rebase", "particle_filtering", "auto"]
LEVELS = ["add1", "add2", "mul1", "mul2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=32, help="arithmetic problems, spread over 4 levels")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    from ttc.core.budget import Budget
    from ttc.core.errors import TTCError
    from ttc.engine import Engine
    from ttc.evaluation.datasets import DatasetConfig, load_problems

    problems = load_problems(DatasetConfig(source="arithmetic", levels=LEVELS, per_level=-(-args.problems // 4),
                                           seed=0))[: args.problems]
    engine = Engine(backend="vllm", verifier="self_eval").start()
    cells, overspend = [], {"generated_tokens": 0, "verifier_tokens": 0, "prompt_tokens": 0, "flops": 0}
    print(f"{'strategy':<20} {'budget':>7} {'accuracy':>9} {'tokens':>8} {'used':>6} {'failed':>6} {'wall s':>7}")
    try:
        for strategy in args.strategies:
            for b in args.budgets:
                budget = Budget(generated_tokens=b)
                start = time.perf_counter()
                sols = engine.solve_many(problems, budget, strategy)
                wall = time.perf_counter() - start
                done = [s for s in sols if not isinstance(s, TTCError)]
                for s in done:
                    for name, cap in budget.to_dict().items():
                        overspend[name] += getattr(s.usage, name) > cap
                used = [s.metrics["budget_used"] for s in done]
                cell = {"strategy": strategy, "budget": b, "problems": len(done), "failed": len(sols) - len(done),
                        "accuracy": sum(bool(s.correct) for s in done) / max(1, len(done)),
                        "mean_tokens": statistics.mean(s.usage.generated_tokens for s in done) if done else 0.0,
                        "budget_used": statistics.mean(used) if used else 0.0, "wall_s": round(wall, 1)}
                cells.append(cell)
                print(f"{strategy:<20} {b:>7} {cell['accuracy']:>9.1%} {cell['mean_tokens']:>8.0f} "
                      f"{cell['budget_used']:>6.2f} {cell['failed']:>6} {wall:>7.1f}", flush=True)
    finally:
        engine.close()
    shares = [c["budget_used"] for c in cells]
    print(json.dumps({"bench": "budget_use", "problems": len(problems), "budgets": args.budgets,
                      "median_budget_used": round(statistics.median(shares), 4), "min_budget_used": round(min(shares), 4),
                      "overspend": overspend, "cells": cells, **provenance()}))


if __name__ == "__main__":
    main()
