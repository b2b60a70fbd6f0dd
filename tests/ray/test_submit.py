"""`ttc submit --wait` of the quickstart recipe on a loopback `ray start --head` cluster, then `ttc jobs`."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def ttc(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ttc.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_submit_the_quickstart_and_read_its_results(ray_head, tmp_path):
    out = tmp_path / "quickstart"
    # The quickstart recipe, shrunk to 2 problems at one budget so the job takes seconds, not minutes,
    # with its generator on a replica pool: `local` must become the job's own cluster, not a new one.
    done = ttc("submit", "recipes/quickstart.yaml", "dataset.per_level=1", "budget=[256]", f"output={out}",
               "cluster.address=local", "--address", ray_head, "--wait")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = re.search(r"^job: (\S+)$", done.stdout, re.M).group(1)
    assert "SUCCEEDED" in done.stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 4  # 2 problems x 4 strategies, each once
    assert len({(r["config"], r["id"]) for r in records}) == 8
    assert all(r["usage"]["generated_tokens"] <= 256 for r in records)
    assert json.loads((out / "recipe.json").read_text())["cluster"]["address"] == "auto"
    pools = json.loads((out / "cluster.json").read_text())
    assert [r["calls"] > 0 for r in pools["generator"]["replicas"]] == [True]
    assert pools["generator"].get("retries", 0) == 0

    status = ttc("jobs", "status", job_id, "--address", ray_head)
    assert status.returncode == 0 and f"{job_id}: SUCCEEDED" in status.stdout
    logs = ttc("jobs", "logs", job_id, "--address", ray_head)
    assert logs.returncode == 0 and "results.jsonl" in logs.stdout
    listed = ttc("jobs", "list", "--address", ray_head)
    assert job_id in listed.stdout and "quickstart" in listed.stdout


def test_submit_refuses_a_bad_recipe_before_it_reaches_the_cluster(ray_head, tmp_path):
    bad = ttc("submit", "recipes/quickstart.yaml", "budget=-5", "--address", ray_head)
    assert bad.returncode == 2 and "budget" in bad.stderr


def test_jobs_names_an_unknown_job(ray_head):
    missing = ttc("jobs", "status", "raysubmit_nosuchjob", "--address", ray_head)
    assert missing.returncode == 2 and "no such job" in missing.stderr
