"""Engine overhead: the same requests through ttc's repeated_sampling and straight through vLLM.

16 prompts x 16 samples x 64 tokens, on one in-process vLLM engine (the embedded
model unless --model is given). After one warm-up of each path, the two paths
alternate for --repeats rounds; the medians are compared. Prints a table and,
as its last line, one JSON object with both wall times and their ratio (engine / raw).

    python -m bench.overhead [--repeats 3] [--model PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time

PROMPTS = [f"What is {a} + {b}?" for a, b in zip(range(3, 19), range(17, 1, -1))]
N, MAX_TOKENS, TEMPERATURE = 16, 64, 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from ttc.engine import Engine
    from ttc.types import Problem

    engine = Engine(backend="vllm", model=args.model).start()
    gen = engine._generator  # the same AsyncLLM serves both paths
    problems = [Problem(p, system=engine.config.system_prompt) for p in PROMPTS]
    rendered = [gen.render_prompt(p) for p in problems]

    def via_engine() -> tuple[float, int]:
        t = time.perf_counter()
        sols = engine.solve_many(problems, N * MAX_TOKENS, "repeated_sampling", n=N, max_tokens=MAX_TOKENS,
                                 temperature=TEMPERATURE)
        return time.perf_counter() - t, sum(s.usage.generated_tokens for s in sols)

    async def raw_async() -> int:
        sp = SamplingParams(n=N, temperature=TEMPERATURE, top_p=1.0, max_tokens=MAX_TOKENS,
                            output_kind=RequestOutputKind.FINAL_ONLY)

        async def one(i: int, prompt: str) -> int:
            final = None
            async for out in gen._engine.generate(prompt, sp, request_id=f"raw-{time.perf_counter_ns()}-{i}"):
                final = out
            return sum(len(o.token_ids) for o in final.outputs)

        return sum(await asyncio.gather(*(one(i, p) for i, p in enumerate(rendered))))

    def via_raw() -> tuple[float, int]:
        t = time.perf_counter()
        tokens = engine._submit(raw_async()).result()
        return time.perf_counter() - t, tokens

    via_engine(), via_raw()  # warm-up of both paths
    rows = []
    for r in range(args.repeats):
        order = [("engine", via_engine), ("raw", via_raw)] if r % 2 == 0 else [("raw", via_raw), ("engine", via_engine)]
        for name, fn in order:
            wall, tokens = fn()
            rows.append((r, name, wall, tokens))
            print(f"round {r}  {name:6s}  {wall:7.2f} s  {tokens:6d} tokens  {tokens / wall:7.1f} tok/s", flush=True)
    engine.close()

    def median(name, i):
        return statistics.median(row[i] for row in rows if row[1] == name)

    e_wall, r_wall = median("engine", 2), median("raw", 2)
    e_tok, r_tok = median("engine", 3), median("raw", 3)
    result = {
        "bench": "overhead", "prompts": len(PROMPTS), "samples": N, "max_tokens": MAX_TOKENS,
        "repeats": args.repeats, "engine_wall_s": round(e_wall, 3), "raw_wall_s": round(r_wall, 3),
        "ratio": round(e_wall / r_wall, 4),
        "engine_tokens_per_s": round(e_tok / e_wall, 1), "raw_tokens_per_s": round(r_tok / r_wall, 1),
        "ratio_per_token": round((e_wall / e_tok) / (r_wall / r_tok), 4),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus", "model": gen.model_name,
    }
    print(f"\nengine {e_wall:.2f} s vs raw vLLM {r_wall:.2f} s: ratio {result['ratio']:.3f} "
          f"(per token {result['ratio_per_token']:.3f}); {result['engine_tokens_per_s']} generated tok/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
