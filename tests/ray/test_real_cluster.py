"""One real generator replica (the embedded model in vLLM inside a Ray actor) serving recipe runs,
and the same replica killed mid-run: every problem still answered, once."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from ttc.engine import Engine
from ttc.evaluation.recipe import parse_recipe
from ttc.evaluation.runner import run_recipe

pytestmark = [pytest.mark.ray, pytest.mark.integration]


def recipe(out, n=8):
    return parse_recipe({
        "name": "cluster", "generator": {"backend": "vllm"},
        "dataset": {"source": "arithmetic", "levels": ["add1", "mul1"], "per_level": n // 2},
        "sampling": {"max_tokens": 96, "temperature": 0.8},
        "strategy": {"name": "best_of_n", "selection": "majority"}, "budget": 384, "output": str(out),
        # Problems in waves of 4, so a kill after the first results still finds work in flight and to come.
        "max_concurrent_problems": 4,
        "cluster": {"address": "local", "generator": {"replicas": 1, "num_cpus": 1}},
    })


@pytest.fixture(scope="module")
def cluster_engine(local_ray):
    r = recipe("unused")
    with Engine(r.engine_config()) as engine:
        engine.start()
        yield engine


def records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_a_real_replica_serves_a_recipe_run(cluster_engine, tmp_path):
    r = recipe(tmp_path)
    run_recipe(r, engine=cluster_engine, progress=False, make_plots=False)
    recs = records(tmp_path)
    assert sorted(x["id"] for x in recs) == sorted({x["id"] for x in recs}) and len(recs) == 8
    # Every problem kept its samples, and its answer is the vote's winner (None only when no sample answered).
    assert all(x["candidates"] and (x["answer"] in x["metrics"]["votes"] if x["answer"] is not None
                                    else not x["metrics"]["votes"]) for x in recs)
    assert all(x["usage"]["generated_tokens"] == sum(c["num_tokens"] for c in x["candidates"]) for x in recs)
    stats = cluster_engine._generator.stats()
    assert stats["replicas"][0]["calls"] >= 8 and stats.get("replaced", 0) == 0


def test_a_replica_killed_mid_run_loses_and_duplicates_nothing(cluster_engine, tmp_path):
    r = recipe(tmp_path, n=12)
    pid = cluster_engine._generator.stats()["replicas"][0]["pid"]
    run = threading.Thread(target=run_recipe, args=(r,), kwargs=dict(engine=cluster_engine, progress=False,
                                                                       make_plots=False))
    run.start()
    results = tmp_path / "results.jsonl"
    deadline = time.monotonic() + 300
    while not (results.exists() and results.read_text().count("\n") >= 2):  # kill it halfway
        assert time.monotonic() < deadline and run.is_alive()
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    run.join(600)
    assert not run.is_alive()
    recs = records(tmp_path)
    ids = [x["id"] for x in recs]
    assert len(ids) == len(set(ids)) == 12  # every problem once
    assert all(x["usage"]["generated_tokens"] == sum(c["num_tokens"] for c in x["candidates"]) for x in recs)
    stats = cluster_engine._generator.stats()
    assert stats["replaced"] == 1 and stats["retries"] >= 1
    assert stats["replicas"][0]["pid"] != pid  # the replacement serves now
    assert not (tmp_path / "errors.jsonl").exists() or not (tmp_path / "errors.jsonl").read_text().strip()
