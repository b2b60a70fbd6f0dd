"""The `cluster:` section: run generator and scorer replicas as Ray actor pools.

Without it everything stays in one process. With it, the Engine builds a
`RayGeneratorPool` (and, for scorers that hold a model, a `RayScorerPool`) in
place of the in-process backend; strategies do not change. Ray is imported
only here and in workers/ray_*.py, and only when a cluster is configured.
"""
from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse

from pydantic import Field

from ttc.core.config import StrictModel
from ttc.core.errors import BackendError, ConfigError


class ReplicaPoolConfig(StrictModel):
    """One pool of identical replicas and where Ray may place them."""

    replicas: int = Field(1, ge=1, le=1024, description="Actors in the pool.")
    num_cpus: float = Field(1.0, ge=0.0, description="CPUs Ray reserves per replica.")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per replica (set tensor_parallel_size in the backend "
                                                     "options to match).")
    max_in_flight: int = Field(256, ge=1, description="Requests a replica takes at once; more wait (backpressure).")
    runtime_env: dict[str, Any] = Field(default_factory=dict,
                                        description="Ray runtime env per replica, e.g. {env_vars: {OMP_NUM_THREADS: '2'}}.")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources per replica.")


class ClusterConfig(StrictModel):
    """How to reach the cluster and how to size the pools."""

    address: str | None = Field(
        "auto", description="'auto' = the running cluster (RAY_ADDRESS or `ray start`), 'local' = start a "
                            "private one in this process, or 'HOST:PORT' / 'ray://HOST:10001'.")
    namespace: str = Field("ttc", description="Ray namespace of the pools' actors.")
    generator: ReplicaPoolConfig = Field(default_factory=ReplicaPoolConfig, description="The generator pool.")
    scorer: ReplicaPoolConfig = Field(default_factory=ReplicaPoolConfig,
                               description="The scorer pool (for verifiers that hold a model, e.g. PRMs).")
    max_attempts: int = Field(3, ge=1, le=20, description="Tries per request across replicas when replicas die.")
    replica_start_timeout_s: float = Field(600.0, gt=0, description="Seconds a new replica may take to load.")
    request_timeout_s: float | None = Field(
        None, gt=0, description="Seconds one attempt may take; past it the replica is taken as hung, replaced, and "
                                "the request retried elsewhere. None = no limit.")
    num_cpus: int | None = Field(None, ge=1, description="With address='local': CPUs of the private cluster.")


#: Keeps a Ray 2.60 node on 127.0.0.1 instead of every interface (tests, one-machine runs). Set only
#: when the cluster is on loopback: on a real cluster it would make a driver report 127.0.0.1 as its IP.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_started_here = False  # this process started a private cluster (address: local) and stops it on close
_users = 0  # pools connected and not yet closed: the private cluster stops only when none is left


def on_loopback(address: str | None) -> bool:
    """Is the cluster at `address` one on this machine's loopback interface?"""
    if address == "local":
        return True
    concrete = _concrete_address(address)
    return concrete is not None and (_host_port(concrete)[0] or "") in LOOPBACK_HOSTS


def _concrete_address(address: str | None) -> str | None:
    """HOST:PORT (or a URL) for `address`; 'auto' is what Ray would find; None for 'local' or nothing found."""
    if address in (None, "auto"):
        address = os.environ.get("RAY_ADDRESS") or _running_cluster_address()
    return None if address in (None, "auto", "local") else address


def _host_port(address: str) -> tuple[str | None, int | None]:
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        return parsed.hostname, parsed.port
    except ValueError:  # a port that is not a number
        return parsed.hostname, None


def _running_cluster_address() -> str | None:
    """The address `ray start` left for this machine (what address='auto' finds), if any."""
    try:
        from ray._private.utils import read_ray_address
    except ImportError:  # a Ray without it: 'auto' is then taken as not loopback
        return None
    try:
        return read_ray_address()
    except OSError:
        return None


def connect(cluster: ClusterConfig) -> None:
    """ray.init once per process, on loopback when the cluster is started here."""
    global _started_here, _users
    try:
        import ray
    except ImportError:
        raise ConfigError("cluster: needs Ray; install the `ray` extra (ray[default]==2.60.0)") from None
    if ray.is_initialized():
        _users += 1
        return
    if on_loopback(cluster.address):
        for k, v in LOOPBACK_ENV.items():
            os.environ.setdefault(k, v)
    kwargs: dict[str, Any] = {"namespace": cluster.namespace, "log_to_driver": True,
                              "configure_logging": False}
    if cluster.address == "local":
        kwargs.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
        if cluster.num_cpus is not None:
            kwargs["num_cpus"] = cluster.num_cpus
    elif cluster.address is not None:
        kwargs["address"] = cluster.address
    _check_reachable(_concrete_address(cluster.address), cluster.address)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise BackendError(f"cluster.address={cluster.address!r}: no Ray cluster there ({exc}); start one with "
                           f"`ray start --head --node-ip-address=127.0.0.1` or use address: local",
                           retryable=False) from None
    _started_here = cluster.address == "local"
    _users += 1


def release() -> None:
    """A pool that connected is closed."""
    global _users
    _users = max(0, _users - 1)


def _check_reachable(address: str | None, configured: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a HOST:PORT address: ray.init would retry for many minutes."""
    if address is None:
        return
    host, port = _host_port(address)
    if not host or not port:
        raise ConfigError(f"cluster.address={configured!r}: expected 'auto', 'local', 'HOST:PORT' or "
                          f"'ray://HOST:PORT'")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise BackendError(f"cluster.address={configured!r}: nothing answers at {host}:{port} ({exc}); start a "
                           f"cluster with `ray start --head --node-ip-address=127.0.0.1` or use address: local",
                           retryable=False) from None


def disconnect() -> None:
    """Stop the private cluster this process started (address: local) once no pool uses it; a
    cluster someone else started (or `ray.init` by the caller) is left running."""
    global _started_here
    if _started_here and _users == 0:
        import ray

        ray.shutdown()
        _started_here = False
