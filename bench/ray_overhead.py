"""Ray overhead: the same short recipe in-process and on a local Ray cluster with one generator replica.

Recipe: 16 arithmetic problems (add1, mul1), best-of-N majority, 8 samples of up to 96
tokens (budget 768), the embedded model. Both engines are started first (start-up is
not timed), each path runs once as a warm-up, then the two alternate for --repeats rounds,
each into a fresh output folder. `ratio` is the median over rounds of the paired ratio
ray/in-process (slow drifts of a shared machine cancel); `ratio_of_medians` is beside it.
Then one more Ray run has its replica's process killed (SIGKILL) half-way through (at
half the median Ray run's wall time, while every problem is in flight): it reports problems finished, retries, replicas replaced, and the extra
wall time over the median Ray run (mostly the replacement loading the model again).
Prints a table and, as its last line, one JSON object.

    python -m bench.ray_overhead [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.provenance import provenance

PROBLEMS = 16


def recipe(out: Path, cluster: bool):
    from ttc.evaluation.recipe import parse_recipe

    data = {
        "name": "ray_overhead", "generator": {"backend": "vllm"},
        "dataset": {"source": "arithmetic", "levels": ["add1", "mul1"], "per_level": PROBLEMS // 2, "seed": 3},
        "sampling": {"max_tokens": 96, "temperature": 0.8},
        "strategy": {"name": "best_of_n", "selection": "majority", "n": 8}, "budget": 768,
        "output": str(out),
    }
    if cluster:
        data["cluster"] = {"address": "local", "num_cpus": 2, "generator": {"replicas": 1, "num_cpus": 1}}
    return parse_recipe(data)


def timed_run(engine, out: Path, cluster: bool) -> float:
    from ttc.evaluation.runner import run_recipe

    t = time.perf_counter()
    run_recipe(recipe(out, cluster), engine=engine, progress=False, make_plots=False)
    return time.perf_counter() - t


def killed_run(engine, out: Path, kill_after_s: float) -> dict:
    """A Ray run whose replica is SIGKILLed `kill_after_s` into the run (half a normal run's time)."""
    from ttc.evaluation.runner import run_recipe

    pid = engine._generator.stats()["replicas"][0]["pid"]
    before = dict(engine._generator.stats())
    t = time.perf_counter()
    run = threading.Thread(target=run_recipe, args=(recipe(out, True),),
                           kwargs=dict(engine=engine, progress=False, make_plots=False))
    run.start()
    results = out / "results.jsonl"
    while time.perf_counter() - t < kill_after_s and run.is_alive():
        time.sleep(0.01)
    killed_at = time.perf_counter() - t
    os.kill(pid, signal.SIGKILL)
    run.join()
    wall = time.perf_counter() - t
    after = engine._generator.stats()
    ids = [json.loads(line)["id"] for line in results.read_text().splitlines()] if results.exists() else []
    return {"wall_s": round(wall, 2), "killed_at_s": round(killed_at, 2), "problems_finished": len(set(ids)),
            "duplicates": len(ids) - len(set(ids)), "retries": after.get("retries", 0) - before.get("retries", 0),
            "replaced": after.get("replaced", 0) - before.get("replaced", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

    from ttc.engine import Engine

    root = Path(tempfile.mkdtemp(prefix="ttc-ray-bench-"))
    t = time.perf_counter()
    local = Engine(recipe(root, False).engine_config()).start()
    local_start = time.perf_counter() - t
    t = time.perf_counter()
    remote = Engine(recipe(root, True).engine_config()).start()
    ray_start = time.perf_counter() - t
    try:
        timed_run(local, root / "warm-local", False)
        timed_run(remote, root / "warm-ray", True)
        local_s, ray_s = [], []
        for i in range(args.repeats):
            local_s.append(timed_run(local, root / f"local{i}", False))
            ray_s.append(timed_run(remote, root / f"ray{i}", True))
            print(f"round {i + 1}: in-process {local_s[-1]:.2f} s, ray {ray_s[-1]:.2f} s, "
                  f"ratio {ray_s[-1] / local_s[-1]:.3f}", flush=True)
        fault = killed_run(remote, root / "killed", statistics.median(ray_s) / 2)
        fault["extra_wall_s"] = round(fault["wall_s"] - statistics.median(ray_s), 2)
    finally:
        remote.close()
        local.close()
    ratios = [r / l for r, l in zip(ray_s, local_s)]
    summary = {
        "bench": "ray_overhead", "problems": PROBLEMS, "samples": 8, "max_tokens": 96,
        "in_process_s": round(statistics.median(local_s), 2), "ray_s": round(statistics.median(ray_s), 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_of_medians": round(statistics.median(ray_s) / statistics.median(local_s), 3),
        "rounds": [[round(a, 2), round(b, 2)] for a, b in zip(local_s, ray_s)],
        "start_up_s": {"in_process": round(local_start, 1), "ray": round(ray_start, 1)},
        "replica_killed_halfway": fault, **provenance(),
    }
    print(f"\nin-process {summary['in_process_s']} s, ray {summary['ray_s']} s (medians of {args.repeats}); "
          f"ratio {summary['ratio']} (target <= 1.15)")
    print(f"replica killed after {fault['killed_at_s']} s: {fault['problems_finished']}/{PROBLEMS} problems "
          f"finished, {fault['duplicates']} duplicated, {fault['retries']} retries, {fault['replaced']} replaced, "
          f"+{fault['extra_wall_s']} s wall")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
