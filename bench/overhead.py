"""Engine overhead: the same requests through ttc's repeated_sampling and straight through vLLM.

16 prompts x 16 samples x 64 tokens, on one in-process vLLM engine (the embedded
model unless --model is given). After one warm-up of each path, the two paths
alternate for --repeats rounds. `ratio` is the median over rounds of the paired
ratio engine/raw (each round runs both paths back to back, so slow drifts of a
shared 2-core machine cancel); `ratio_of_medians` is reported beside it. The
engine's own CPU cost is also measured directly: the same 16x16 requests through
the engine on the zero-latency fake backend (`orchestration_ms`).
Prints a table and, as its last line, one JSON object.

    python -m bench.overhead [--repeats 3] [--model PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

from bench.provenance import provenance

PROMPTS = [f"What is {a} + {b}?" for a, b in zip(range(3, 19), range(17, 1, -1))]
N, MAX_TOKENS, TEMPERATURE = 16, 64, 0.8


def fake_orchestration_seconds(repeats: int = 5) -> float:
    """Median wall time of the same 16x16x64 requests through the engine on a zero-latency fake backend."""
    from ttc.engine import Engine
    from ttc.testing import FakeGenerator, answer_script

    gen = FakeGenerator(answer_script({"20": 0.5, "19": 0.3, "x = 4": 0.2}, steps=3, words_per_step=20))
    times = []
    with Engine(generator=gen) as engine:
        for _ in range(repeats + 1):  # the first is a warm-up
            t = time.perf_counter()
            engine.solve_many(PROMPTS, N * MAX_TOKENS, "repeated_sampling", n=N, max_tokens=MAX_TOKENS)
            times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from ttc.engine import Engine
    from ttc.core.types import Problem

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

    paired = [
        next(w for rr, n, w, _ in rows if rr == r and n == "engine") / next(w for rr, n, w, _ in rows if rr == r and n == "raw")
        for r in range(args.repeats)
    ]
    orchestration_s = fake_orchestration_seconds()
    e_wall, r_wall = median("engine", 2), median("raw", 2)
    e_tok, r_tok = median("engine", 3), median("raw", 3)
    result = {
        "bench": "overhead", "prompts": len(PROMPTS), "samples": N, "max_tokens": MAX_TOKENS,
        "repeats": args.repeats, "engine_wall_s": round(e_wall, 3), "raw_wall_s": round(r_wall, 3),
        "ratio": round(statistics.median(paired), 4), "paired_ratios": [round(x, 4) for x in paired],
        "ratio_of_medians": round(e_wall / r_wall, 4), "orchestration_ms": round(1000 * orchestration_s, 2),
        "engine_tokens_per_s": round(e_tok / e_wall, 1), "raw_tokens_per_s": round(r_tok / r_wall, 1),
        "ratio_per_token": round((e_wall / e_tok) / (r_wall / r_tok), 4),
        **provenance(), "model": gen.model_name,
    }
    print(f"\nengine {e_wall:.2f} s vs raw vLLM {r_wall:.2f} s (medians); paired ratio {result['ratio']:.3f}, "
          f"ratio of medians {result['ratio_of_medians']:.3f}, per token {result['ratio_per_token']:.3f}; "
          f"{result['engine_tokens_per_s']} generated tok/s; engine CPU cost on the fake backend "
          f"{result['orchestration_ms']} ms per run")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
