"""Bad `cluster:` input is refused before any Ray process starts, naming the field and the value."""
import socket

import pytest

from workers.cluster import connect
from workers.cluster import ClusterConfig
from ttc.core.errors import BackendError, ConfigError
from ttc.evaluation.recipe import parse_recipe

BASE = {"strategy": {"name": "best_of_n"}, "budget": 256, "dataset": {"source": "arithmetic"}}


@pytest.mark.parametrize("override, message", [
    ({"cluster.generator.replicas": 0}, "cluster.generator.replicas: Input should be greater than or equal to 1, got 0"),
    ({"cluster.max_attempts": 0}, "cluster.max_attempts: Input should be greater than or equal to 1, got 0"),
    ({"cluster.request_timeout_s": -1}, "cluster.request_timeout_s: Input should be greater than 0, got -1"),
    ({"cluster.scorer.max_in_flight": 0}, "cluster.scorer.max_in_flight: Input should be greater than or equal to 1"),
    ({"cluster.generator.gpus": 1}, "unknown option 'cluster.generator.gpus'"),
])
def test_bad_cluster_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_recipe(BASE, override)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free again once closed: nothing listens there


def test_an_address_where_nothing_listens_fails_at_once_instead_of_retrying_for_minutes():
    port = closed_port()
    with pytest.raises(BackendError, match=f"cluster.address='127.0.0.1:{port}': nothing answers at 127.0.0.1:{port}"):
        connect(ClusterConfig(address=f"127.0.0.1:{port}"))
    with pytest.raises(ConfigError, match="cluster.address='127.0.0.1:abc': expected 'auto', 'local', 'HOST:PORT'"):
        connect(ClusterConfig(address="127.0.0.1:abc"))
