"""The OpenAI-compatible server against calling the engine directly, on the embedded model.

The same requests (arithmetic prompts, best-of-N majority at a small budget, one seed each) are
solved by `Engine.solve_many` directly and through `ttc serve` (in this process, on the same engine)
by 32 concurrent official `openai` clients. Rounds alternate (direct, server, direct, server, ...), so
the prefix cache favours neither; the ratio is of the median walls. Prints requests/s, p50/p95
latency and errors of the server, and as its last line one JSON object with `ratio` (server wall /
direct wall; target <= 1.10) and `errors`.

    python -m bench.serve [--requests 64] [--clients 32] [--budget 256] [--rounds 3] [--clients-in-process]

The clients run in a process of their own (started and warmed before the rounds), as a deployment's clients
are elsewhere: 32 client threads inside the server's process compete with the server and the engine for its
interpreter lock, which measured the bench rather than the server (`--clients-in-process` keeps them there).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench.provenance import provenance

MAX_TOKENS = 64


def prompts(n: int) -> list[str]:
    import random

    rng = random.Random(0)
    return [f"What is {rng.randrange(10, 100)} + {rng.randrange(10, 100)}?" for _ in range(n)]


def run_direct(engine, questions, budget: int, seed: int) -> tuple[float, int]:
    start = time.perf_counter()
    out = engine.solve_many(questions, budget, "best_of_n", seed=seed, max_tokens=MAX_TOKENS)
    wall = time.perf_counter() - start
    return wall, sum(r.usage.generated_tokens for r in out if not isinstance(r, Exception))


def run_server(url: str, questions, budget: int, seed: int, clients: int) -> tuple[float, list[float], int, int]:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
    latencies, errors, tokens = [], 0, 0
    lock = threading.Lock()

    def one(q: str) -> None:
        nonlocal errors, tokens
        t0 = time.perf_counter()
        try:
            r = client.chat.completions.create(model="ttc", messages=[{"role": "user", "content": q}], seed=seed,
                                               max_tokens=MAX_TOKENS, extra_body={"budget": budget,
                                                                                  "strategy": "best_of_n"})
            with lock:
                latencies.append(time.perf_counter() - t0)
                tokens += r.usage.completion_tokens
        except Exception:  # noqa: BLE001 - counted, the figure to report
            with lock:
                errors += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, questions))
    return time.perf_counter() - start, latencies, errors, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients-in-process", action="store_true",
                        help="the client threads in the server's own process (the earlier figures' set-up)")
    parser.add_argument("--engine-slots", type=int, default=None,
                        help="the engine's max_concurrent_problems (default 64); = --clients keeps the direct side "
                        "at as many problems in flight as the server's clients")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from ttc.engine import Engine
    from ttc.serve.config import load_serve_config
    from ttc.serve.server import build_server

    questions = prompts(args.requests)
    engine = Engine(backend="vllm", **({"max_concurrent_problems": args.engine_slots} if args.engine_slots else {})).start()
    config = load_serve_config(None, {"serve.port": 0, "serve.max_concurrent": args.clients,
                                      "serve.max_budget": args.budget})
    server, _ = build_server(config, engine=engine, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    clients = None
    if not args.clients_in_process:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        clients = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        clients.submit(run_server, url, questions[:1], args.budget, 98, 1).result()  # started and warmed, untimed
    serve = (lambda *a: clients.submit(run_server, *a).result()) if clients else run_server
    run_direct(engine, questions[:4], args.budget, 99)  # warm-up: first requests pay one-time costs
    direct, served, latencies, errors, tokens = [], [], [], 0, {"direct": [], "server": []}
    for r in range(args.rounds):
        wall, tok = run_direct(engine, questions, args.budget, seed=r)
        direct.append(wall)
        tokens["direct"].append(tok)
        wall, lat, err, tok = serve(url, questions, args.budget, r, args.clients)
        served.append(wall)
        latencies += lat
        errors += err
        tokens["server"].append(tok)
        print(f"round {r}: direct {direct[-1]:.1f} s ({tokens['direct'][-1]} tokens), server {wall:.1f} s "
              f"({tok} tokens), errors {err}", flush=True)
    if clients:
        clients.shutdown()
    server.should_exit = True
    thread.join(30)
    engine.close()
    ratio = statistics.median(served) / statistics.median(direct)
    lat = sorted(latencies)
    p = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None)
    summary = {"bench": "serve", "requests": args.requests, "clients": args.clients, "budget": args.budget,
               "engine_slots": args.engine_slots or 64, "client_process": not args.clients_in_process,
               "rounds": args.rounds, "direct_wall_s": [round(x, 2) for x in direct],
               "server_wall_s": [round(x, 2) for x in served],
               "requests_per_s": round(args.requests / statistics.median(served), 2),
               "p50_latency_s": p(0.5), "p95_latency_s": p(0.95), "errors": errors,
               "generated_tokens": tokens, "ratio": round(ratio, 3), **provenance()}
    print(f"server: {summary['requests_per_s']} requests/s, p50 {summary['p50_latency_s']} s, p95 "
          f"{summary['p95_latency_s']} s, errors {errors}; ratio server / direct (median walls) {ratio:.3f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
