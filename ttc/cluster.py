"""The `cluster:` section: run generator and scorer replicas as Ray actor pools.

Without it everything stays in one process. With it, the Engine builds a
`RayGeneratorPool` (and, for scorers that hold a model, a `RayScorerPool`) in
place of the in-process backend; strategies do not change. Ray is imported
only here and in workers/ray_*.py, and only when a cluster is configured.
"""
from __future__ import annotations

import os
from typing import Any

from ttc.config import ClusterConfig, PoolConfig  # noqa: F401 (re-exported: the cluster's configs)
from ttc.errors import BackendError, ConfigError

#: Keeps a Ray 2.60 head on 127.0.0.1 instead of every interface (tests, one-machine runs).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def connect(cluster: ClusterConfig) -> None:
    """ray.init once per process, on loopback when the cluster is started here."""
    try:
        import ray
    except ImportError:
        raise ConfigError("cluster: needs Ray; install the `ray` extra (ray[default]==2.60.0)") from None
    if ray.is_initialized():
        return
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
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise BackendError(f"cluster.address={cluster.address!r}: no Ray cluster there ({exc}); start one with "
                           f"`ray start --head --node-ip-address=127.0.0.1` or use address: local",
                           retryable=False) from None
