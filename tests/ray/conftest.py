"""Ray clusters for tests, bound to 127.0.0.1 and torn down with every process they started.

`local_ray`: a private cluster inside the test process (ray.init(address="local")).
`ray_head`: a `ray start --head` cluster with its job server, on free ports and its own temp
folder, so it never collides with a cluster someone else runs on the machine; at the end every
process holding a file in that folder (and their children) is stopped.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from workers.cluster import LOOPBACK_ENV


@pytest.fixture(scope="module")
def local_ray():
    import ray

    for k, v in LOOPBACK_ENV.items():
        os.environ.setdefault(k, v)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1",
             namespace="ttc-tests", configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_using(folder: str) -> list[psutil.Process]:
    """Processes with a file open under `folder`, and all their descendants."""
    seeds = []
    for p in psutil.process_iter():
        try:
            if any(f.path.startswith(folder) for f in p.open_files()):
                seeds.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found = {p.pid: p for p in seeds}
    for p in seeds:
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    return [p for pid, p in found.items() if pid != os.getpid()]


def stop_processes(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(scope="module")
def ray_head():
    temp = tempfile.mkdtemp(prefix="ttc-ray-", dir="/tmp")  # short: Ray puts unix sockets in it
    env = {**os.environ, **LOOPBACK_ENV, "AUTOSCALER_METRIC_PORT": str(free_port()),
           "DASHBOARD_METRIC_PORT": str(free_port())}
    dashboard = free_port()
    ray = str(Path(sys.executable).parent / "ray")
    cmd = [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
           "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"]
    try:
        subprocess.run(cmd, env=env, check=True, timeout=180, capture_output=True, text=True)
        address = f"http://127.0.0.1:{dashboard}"
        _wait_for_job_server(address)
        yield address
    finally:
        stop_processes(processes_using(temp))
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_job_server(address: str, timeout: float = 60) -> None:
    from ttc import jobs

    deadline = time.monotonic() + timeout
    while True:
        try:
            jobs.list_jobs(address=address)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
