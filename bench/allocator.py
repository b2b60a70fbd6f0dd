"""Compute-optimal allocation on the embedded model: calibrate on one part of the arithmetic set,
evaluate `auto` on another.

Calibration set: arithmetic levels add1, add2, mul1, mul2 (50 each by default), seed 0. Held-out set:
the same levels, seed 1 (other problems). The grid is best-of-N majority and
confidence-weighted best-of-N (mean_logprob) at 128, 512, 1024 and 2048 tokens per problem
(max_tokens 128, so 1, 4, 8 and 16 samples), plus the 4-sample probe. The allocator is
fitted on the calibration set only. On the held-out set, every figure is an expected
accuracy over the samples recorded for each problem (best-of-N at N: the mean over random
N-subsets of that configuration's samples; auto: the real strategy run on a replay of those
samples, its probe's first, then those of the best-of-N it picks in random orders, with its
early stop: `ttc.calibrate.AutoReplay`), so one run's luck does not decide the comparison;
auto's tokens include the probe. `auto` is also run live on the held-out set (one run, at 1024
and 2048 tokens) to check that a replay spends what fresh samples cost.
Prints accuracy versus tokens for auto, the best fixed configuration and best-of-N majority,
writes a plot, and, as its last line, one JSON object whose `compute_ratio` is the tokens
auto needs over the tokens best-of-N majority needs to reach best-of-N majority's top
accuracy, with a 90% bootstrap interval over the held-out problems.

    python -m bench.allocator [--per-level 50] [--out bench/out/allocator]
    python -m bench.allocator --out bench/out/allocator_trained --seeds 4 5 --verifier prm_transformers \
        --verifier-set model=bench/out/verifier/verifier --selection combined --verifier-weight G
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

from bench.provenance import provenance

MAX_TOKENS = 128


#: The grid's verifier and its best-of-N rule; `--verifier` etc. replace them (e.g. a trained verifier).
VERIFIER = {"name": "mean_logprob", "options": {}}
WEIGHTED = {"name": "best_of_n", "selection": "weighted", "label": "weighted"}


def recipe_data(seed: int, per_level: int, out: Path) -> dict:
    return {
        "name": f"allocator_seed{seed}", "generator": {"backend": "vllm"}, "verifier": VERIFIER,
        "dataset": {"source": "arithmetic", "levels": ["add1", "add2", "mul1", "mul2"], "per_level": per_level,
                    "seed": seed},
        "sampling": {"max_tokens": MAX_TOKENS, "temperature": 0.8},
        "strategy": [{"name": "best_of_n", "selection": "majority", "label": "majority"}, WEIGHTED],
        "budget": [128, 512, 1024, 2048], "output": str(out / f"seed{seed}"),
    }


def live_data(allocator: str, per_level: int, out: Path, seed: int) -> dict:
    """`auto` with the calibrated allocator on the held-out set; its folder is named by the allocator's
    content, so a refitted allocator runs afresh and an unchanged one resumes."""
    import hashlib

    fitted = json.loads(Path(allocator).read_text())
    fitted.pop("created", None)
    digest = hashlib.sha256(json.dumps(fitted, sort_keys=True).encode()).hexdigest()[:10]
    data = recipe_data(seed, per_level, out)
    return {**data, "name": f"allocator_live_{digest}", "output": str(out / f"live_{digest}"), "budget": [1024, 2048],
            "strategy": [{"name": "auto", "allocator": str(Path(allocator).resolve()), "label": "auto"}]}


def live_curve(records: list[dict]) -> list[dict]:
    from ttc.calibrate import accuracy_curve

    points = defaultdict(list)
    for r in records:
        points[int(r["budget"]["generated_tokens"])].append((float(bool(r["correct"])), r["usage"]["generated_tokens"]))
    return accuracy_curve(points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=50)
    parser.add_argument("--held-out-per-level", type=int, default=None,
                        help="problems per level of the held-out set (default: --per-level)")
    parser.add_argument("--out", default="bench/out/allocator")
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 1], metavar=("CALIBRATION", "HELD_OUT"),
                        help="dataset seeds of the two sets (use others than a trained verifier's training problems)")
    parser.add_argument("--verifier", default=None, help="scorer of the grid instead of mean_logprob")
    parser.add_argument("--verifier-set", dest="verifier_sets", action="append", default=[], metavar="KEY=VALUE",
                        help="its option, repeatable (e.g. model=bench/out/verifier/verifier)")
    parser.add_argument("--selection", default="weighted", choices=["weighted", "combined", "verifier"],
                        help="the grid's verifier rule of best-of-N")
    parser.add_argument("--verifier-weight", type=float, default=1.0, help="g of selection 'combined'")
    args = parser.parse_args()
    from ttc.core.config import parse_assignments

    if args.verifier:
        VERIFIER.update(name=args.verifier, options=parse_assignments(args.verifier_sets))
    WEIGHTED.update(selection=args.selection, label=args.selection)
    if args.selection == "combined":
        WEIGHTED["verifier_weight"] = args.verifier_weight
    calibration_seed, held_out_seed = args.seeds
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TTC_HOME", str(Path(args.out).resolve() / "home"))

    from strategies.auto import allocator as A
    from ttc.calibrate import (AutoReplay, calibrate, compare, grid_configs, grid_records, outcomes_from_records,
                               probe_recipe, probe_records, tokens_to_reach)
    from ttc.engine import Engine
    from ttc.evaluation.recipe import parse_recipe
    from ttc.evaluation.results import ResultsLog
    from ttc.evaluation.runner import run_recipe

    out = Path(args.out)
    calib = parse_recipe(recipe_data(calibration_seed, args.per_level, out))
    held_per_level = args.held_out_per_level or args.per_level
    held = parse_recipe(recipe_data(held_out_seed, held_per_level, out))
    engine = Engine(calib.engine_config()).start()
    t0 = time.perf_counter()
    report = calibrate(calib, probe_samples=4, name="bench_allocator", progress=False, engine=engine)
    model = A.load(report["allocator"][-1])
    run_recipe(probe_recipe(held, model.probe_samples), engine=engine, progress=False, make_plots=False)
    run_recipe(held, engine=engine, progress=False, make_plots=False)
    # auto run live on the held-out set: a check that its replay spends what fresh samples cost.
    live_recipe = parse_recipe(live_data(report["allocator"][-1], held_per_level, out, held_out_seed))
    run_recipe(live_recipe, engine=engine, progress=False, make_plots=False)
    engine.close()
    wall = time.perf_counter() - t0
    live = live_curve(ResultsLog(live_recipe.output_dir() / "results.jsonl").load())

    records = grid_records(held.output_dir(), probe_recipe(held, model.probe_samples), held)
    configs = grid_configs(held)
    probes = probe_records(records, configs)
    outcomes = outcomes_from_records(records, probes, configs)
    ids = sorted(probes)
    replay = AutoReplay(probes, outcomes, max_tokens=MAX_TOKENS)
    t1 = time.perf_counter()
    auto = replay.points([(model, ids)])
    replay_s = time.perf_counter() - t1
    result = compare(auto, outcomes, configs, ids, "majority")
    interval = bootstrap_ratio(replay, model, ids, outcomes, configs)
    need_live = tokens_to_reach(live, result["best_of_n_top"]["accuracy"])
    live_ratio = None if need_live is None else need_live / result["best_of_n_top"]["tokens"]

    print(f"calibration bins (edges on predicted pass@1 {[round(e, 3) for e in model.edges]}):")
    for i, b in enumerate(model.bins):
        print(f"  bin {i}: {b.problems} problems, most accurate per budget {b.best}")
    tried = ", ".join(f"{t['price_per_1k_tokens']}/{t['stop_margin']} -> {t['compute_ratio'] and round(t['compute_ratio'], 3)}"
                      for t in report["settings_tried"])
    print(f"chosen by cross-fitting on the calibration set: price_per_1k_tokens={model.price_per_1k_tokens}, "
          f"stop_margin={model.stop_margin} (price/margin -> cross-fitted compute ratio: {tried})")
    print("\nheld-out accuracy vs mean generated tokens per problem:")
    rows = [("auto (expected)", result["auto"]), ("auto, run live (one run)", live),
            (f"best fixed ({result['best_fixed']['config']})", result["best_fixed"]["curve"]),
            ("best-of-N majority", result["best_of_n_majority"]["curve"])]
    for name, curve in rows:
        print(f"  {name:<28} " + "  ".join(f"{p['accuracy']:.1%}@{p['tokens']:.0f}" for p in curve))
    decisions = replay.decisions(model, ids, 2048)
    plot(rows, out / "allocator.png")
    summary = {
        "bench": "allocator", "calibration_problems": model.data.get("problems"), "held_out_problems": len(ids),
        "auto": result["auto"], "best_fixed": result["best_fixed"], "best_of_n_majority": result["best_of_n_majority"],
        "best_of_n_top": result["best_of_n_top"], "auto_tokens_to_reach_it": result["auto_tokens_to_reach_it"],
        "price_per_1k_tokens": model.price_per_1k_tokens, "stop_margin": model.stop_margin,
        "settings_tried": report["settings_tried"],
        "auto_live": live, "compute_ratio_live": live_ratio,
        "compute_ratio": result["compute_ratio"], "compute_ratio_90pct_interval": interval,
        "decisions_at_2048": dict(decisions), "auto_replay_runs": replay.runs, "auto_replay_s": round(replay_s, 1),
        "wall_s": round(wall, 1), "plot": str(out / "allocator.png"),
        **provenance(),
    }
    print(f"\ncompute_ratio (auto tokens / best-of-N tokens at best-of-N's top accuracy "
          f"{result['best_of_n_top']['accuracy']:.1%}): {result['compute_ratio']}; 90% bootstrap interval over "
          f"the held-out problems: {interval}")
    print(json.dumps(summary))


def bootstrap_ratio(replay, model, ids, outcomes, configs, rounds: int = 200, seed: int = 0) -> list:
    """5th and 95th percentiles of the compute ratio over resamples of the held-out problems (a
    ratio that never reaches best-of-N's top counts as infinite, shown as None). auto's runs are
    the replay's, already made for `ids`: a resample only counts them again."""
    import math
    import random

    from ttc.calibrate import compare

    rng, ratios = random.Random(seed), []
    for _ in range(rounds):
        sample = [rng.choice(ids) for _ in ids]
        r = compare(replay.points([(model, sample)]), outcomes, configs, sample, "majority")["compute_ratio"]
        ratios.append(math.inf if r is None else r)
    ratios.sort()
    pick = [ratios[int(0.05 * rounds)], ratios[int(0.95 * rounds) - 1]]
    return [None if math.isinf(r) else round(r, 3) for r in pick]


def plot(rows, path: Path) -> None:
    from ttc.evaluation.report import accuracy_vs_tokens_plot

    accuracy_vs_tokens_plot([(name, [(p["tokens"], p["accuracy"]) for p in curve]) for name, curve in rows], path,
                            xlabel="generated tokens per problem (mean, probe included for auto)",
                            ylabel="accuracy (held-out arithmetic)",
                            title="auto vs fixed strategies, SmolLM2-135M on CPU")


if __name__ == "__main__":
    main()
