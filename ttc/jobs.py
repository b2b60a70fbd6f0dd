"""`ttc submit` and `ttc jobs`: run a recipe as a Ray job through the Jobs API.

What travels with the job (its runtime environment): the project's packages
(ttc, strategies, verifiers, workers) as `py_modules`, so the cluster runs this
checkout's code, and a staging folder as `working_dir` holding the recipe with
the overrides applied, its dataset path made absolute and its output folder
made absolute (resolved here, as `ttc run` would; on a multi-node cluster, point
`output` at storage the nodes share). The job runs `ttc run` on the cluster,
which resumes from `results.jsonl` like any run.

Ray 2.60 may require a token on its dashboard: the token is taken from
RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token, and
sent as a bearer header.
"""
from __future__ import annotations

import asyncio
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import yaml

from workers.cluster import LOOPBACK_ENV, LOOPBACK_HOSTS
from ttc.core.errors import BackendError, ConfigError

#: The folders of this project that a job needs, shipped as Ray py_modules.
PROJECT_PACKAGES = ("ttc", "strategies", "verifiers", "workers")
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def default_address() -> str:
    return os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("TTC_RAY_ADDRESS") or DEFAULT_ADDRESS


def auth_token() -> str | None:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if path and Path(path).is_file():
            return Path(path).read_text().strip() or None
    return None


def is_loopback(address: str) -> bool:
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    return host in LOOPBACK_HOSTS


def client(address: str):
    """A JobSubmissionClient for `address`, with the auth token when there is one."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise ConfigError("ttc submit needs Ray; install the `ray` extra (ray[default]==2.60.0)") from None
    if is_loopback(address):
        for k, v in LOOPBACK_ENV.items():
            os.environ.setdefault(k, v)
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as exc:  # ConnectionError, or Ray's own errors for a refused or unauthorised call
        raise BackendError(f"--address {address}: no Ray job server answered ({_first_line(exc)}); start one "
                           f"with `ray start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1`",
                           retryable=False) from None


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def stage_recipe(recipe, staging: Path) -> Path:
    """Write the recipe as the job will run it: paths absolute, overrides applied."""
    data = recipe.model_dump(mode="json")
    source = data["dataset"]["source"]
    if source.endswith((".jsonl", ".parquet")) and not Path(source).is_absolute():
        data["dataset"]["source"] = str(((recipe._base_dir or Path.cwd()) / source).resolve())
    model = data["generator"].get("model")
    if model and not Path(model).is_absolute():
        local = (recipe._base_dir or Path.cwd()) / model
        if local.exists():  # a checkpoint folder beside the recipe; a hub name stays as it is
            data["generator"]["model"] = str(local.resolve())
    if data.get("cluster") and data["cluster"].get("address") == "local":
        # Inside a job "local" would start a second, private cluster: use the one the job runs on.
        data["cluster"]["address"] = "auto"
    data["output"] = str(recipe.output_dir().resolve())
    path = staging / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def submit(recipe, *, address: str, python: str | None = None, submission_id: str | None = None,
           env: dict[str, str] | None = None) -> str:
    """Submit `recipe` (a loaded Recipe) as a Ray job; returns the job id."""
    jobs = client(address)
    # On this machine the job can use this very interpreter; elsewhere, the cluster's `python`.
    python = python or (sys.executable if is_loopback(address) else "python")
    root = project_root()
    env_vars = {"PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "VLLM_LOGGING_LEVEL": "ERROR"}
    if is_loopback(address):
        env_vars.update(LOOPBACK_ENV)
    if os.environ.get("TTC_HOME"):
        env_vars["TTC_HOME"] = os.environ["TTC_HOME"]
    env_vars.update(env or {})
    entrypoint = f"{shlex.quote(python)} -m ttc.cli run recipe.yaml --no-progress"
    # submit_job packs and uploads the working_dir before it returns, so the staging folder can go.
    with tempfile.TemporaryDirectory(prefix="ttc-submit-") as staging:
        stage_recipe(recipe, Path(staging))
        runtime_env = {"working_dir": staging, "py_modules": [str(root / p) for p in PROJECT_PACKAGES],
                       "excludes": ["__pycache__", "*.pyc"], "env_vars": env_vars}
        try:
            return jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
                                   metadata={"ttc_recipe": recipe.name})
        except Exception as exc:
            raise BackendError(f"the job server at {address} refused the job: {_first_line(exc)}",
                               retryable=False) from None


def status(job_id: str, *, address: str) -> dict[str, Any]:
    info = _call(lambda: client(address).get_job_info(job_id), job_id, address)
    return {"job_id": job_id, "status": _status_value(info.status), "message": info.message,
            "entrypoint": info.entrypoint, "start_time": info.start_time, "end_time": info.end_time}


def logs(job_id: str, *, address: str) -> str:
    return _call(lambda: client(address).get_job_logs(job_id), job_id, address)


def follow(job_id: str, *, address: str, write: Callable[[str], Any] = sys.stdout.write,
           poll_s: float = 1.0) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    jobs = client(address)

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            write(chunk)
            if hasattr(sys.stdout, "flush"):
                sys.stdout.flush()

    _call(lambda: asyncio.run(tail()), job_id, address)
    # The log stream can end (or drop) before the job's status does: poll until it is terminal.
    while (state := _call(lambda: _status_value(jobs.get_job_status(job_id)), job_id, address)) not in TERMINAL:
        time.sleep(poll_s)
    return state


def _status_value(s) -> str:
    return str(getattr(s, "value", s))


def stop(job_id: str, *, address: str) -> bool:
    return _call(lambda: client(address).stop_job(job_id), job_id, address)


def list_jobs(*, address: str) -> list[dict[str, Any]]:
    out = []
    for info in _call(lambda: client(address).list_jobs(), "*", address):
        out.append({"job_id": info.submission_id or info.job_id,
                    "status": _status_value(info.status),
                    "recipe": (info.metadata or {}).get("ttc_recipe"), "start_time": info.start_time})
    return out


def _call(fn, job_id: str, address: str):
    try:
        return fn()
    except (BackendError, ConfigError):
        raise
    except Exception as exc:
        msg = _first_line(exc)
        if "404" in msg or "does not exist" in msg.lower() or "not found" in msg.lower():
            raise ConfigError(f"job {job_id!r}: no such job at {address}") from None
        raise BackendError(f"job {job_id!r} at {address}: {msg}", retryable=False) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
