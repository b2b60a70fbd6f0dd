"""A private Ray cluster on 127.0.0.1 for the whole module, shut down (with every actor) at the end."""
from __future__ import annotations

import os

import pytest

from ttc.cluster import LOOPBACK_ENV


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
