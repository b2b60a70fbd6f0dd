"""Step-level search throughput and prefix caching: beam search on 16 arithmetic problems.

Beam search (N=8, M=4) through the engine, once with all problems concurrent
and once one problem at a time, on one started engine. The scorer is the oracle
(reference-based, free): this measures the policy side — batching, prefix reuse,
prompt tokens per generated token — not search quality. Prints a table and, as
its last line, one JSON object with both wall times, `speedup`,
`prefix_cache_hit_rate` (cached / prompt tokens over step continuations) and
`prompt_tokens_per_generated_token`; then the same search with self-evaluation as the
scorer, whose judge prompts count too (`self_eval_prompt_tokens_per_generated_token`,
and its `uncached` twin: what was computed; target <= 3).

    python -m bench.step_search [--block-size 16] [--problems 16]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from bench.provenance import provenance

N, M = 8, 4
OPTIONS = dict(n=N, beam_width=M, max_tokens=256, max_step_tokens=64, max_steps=4, temperature=0.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-size", type=int, default=None, help="KV block size; None = vLLM's default")
    parser.add_argument("--problems", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    from ttc.evaluation.datasets import DatasetConfig, load_problems
    from ttc.engine import Engine

    problems = load_problems(DatasetConfig(source="arithmetic", levels=["add2", "mul1"],
                                           per_level=args.problems // 2, seed=1))
    options = {"block_size": args.block_size} if args.block_size else {}
    engine = Engine(backend="vllm", backend_options=options, verifier="oracle").start()
    gen = engine._generator
    roots = {gen.render_prompt(engine_problem) for engine_problem in
             [p.__class__(p.prompt, p.id, p.reference, engine.config.system_prompt) for p in problems]}
    log: list[tuple[bool, int, int, int, bool]] = []  # (continuation?, prompt, cached, generated, judge?)
    real_generate = gen.generate

    async def recording_generate(requests):
        results = await real_generate(requests)
        for req, res in zip(requests, results):
            judge = req.params.max_tokens == 1 and req.params.logprobs is not None  # self_eval's question
            log.append((req.prompt not in roots, res.prompt_tokens, res.cached_prompt_tokens,
                        sum(c.num_tokens for c in res.completions), judge))
        return results

    gen.generate = recording_generate
    engine.solve_many(problems[:2], 10**6, "beam_search", **OPTIONS)  # warm-up
    log.clear()

    t = time.perf_counter()
    sols = engine.solve_many(problems, 10**6, "beam_search", **OPTIONS)
    concurrent = time.perf_counter() - t
    cont = [r for r in log if r[0]]
    hit_rate = sum(r[2] for r in cont) / max(1, sum(r[1] for r in cont))
    prompt_per_gen = sum(r[1] for r in log) / max(1, sum(r[3] for r in log))
    uncached_per_gen = sum(r[1] - r[2] for r in log) / max(1, sum(r[3] for r in log))
    accuracy = sum(bool(s.correct) for s in sols) / len(sols)
    print(f"concurrent   {concurrent:7.2f} s  {len(log)} requests  accuracy {accuracy:.1%}", flush=True)

    t = time.perf_counter()
    for p in problems:
        engine.solve(p, 10**6, "beam_search", **OPTIONS)
    serial = time.perf_counter() - t
    print(f"one at a time {serial:7.2f} s", flush=True)

    # The same search scored by self-evaluation: its judge prompts are prompt tokens too. Per token the
    # policy generated, how many prompt tokens were sent, and how many were computed (not cached).
    log.clear()

    async def self_evaluated():
        return await asyncio.gather(*(engine.asolve(p, 10**6, "beam_search", verifier="self_eval", **OPTIONS)
                                      for p in problems))

    t = time.perf_counter()
    asyncio.run(self_evaluated())
    judged_wall = time.perf_counter() - t
    policy_generated = max(1, sum(r[3] for r in log if not r[4]))
    judged_prompt_per_gen = sum(r[1] for r in log) / policy_generated
    judged_uncached_per_gen = sum(r[1] - r[2] for r in log) / policy_generated
    print(f"self_eval    {judged_wall:7.2f} s  {len(log)} requests ({sum(r[4] for r in log)} judgements)", flush=True)
    engine.close()

    result = {
        "bench": "step_search", "problems": len(problems), "n": N, "beam_width": M,
        "block_size": args.block_size or "default", "concurrent_wall_s": round(concurrent, 3),
        "one_at_a_time_wall_s": round(serial, 3), "speedup": round(serial / concurrent, 3),
        "prefix_cache_hit_rate": round(hit_rate, 4), "continuation_requests": len(cont),
        "prompt_tokens_per_generated_token": round(prompt_per_gen, 3),
        "uncached_prompt_tokens_per_generated_token": round(uncached_per_gen, 3),
        "self_eval_wall_s": round(judged_wall, 3),
        "self_eval_prompt_tokens_per_generated_token": round(judged_prompt_per_gen, 3),
        "self_eval_uncached_prompt_tokens_per_generated_token": round(judged_uncached_per_gen, 3),
        **provenance(),
    }
    print(f"\nspeedup {result['speedup']:.2f}x; prefix-cache hit rate on continuations {hit_rate:.1%}; "
          f"{prompt_per_gen:.2f} prompt tokens per generated token ({uncached_per_gen:.2f} uncached); with "
          f"self_eval {judged_prompt_per_gen:.2f} ({judged_uncached_per_gen:.2f} uncached)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
