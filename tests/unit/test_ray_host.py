"""WorkerHost is a plain class (Ray wraps it only at wiring time), so its error contract is tested
without Ray: every worker error comes back as a Failure value the pool can act on."""
import asyncio

from ttc.core.errors import BackendError
from ttc.core.types import GenerationRequest, SamplingParams
from workers.ray_host import KEPT_AFFINITY_KEYS, Failure, WorkerHost


class Broken:
    def __init__(self, exc, dead=False):
        self.exc, self.dead = exc, dead

    async def generate(self, requests):
        raise self.exc


def host_with(worker) -> WorkerHost:
    host = WorkerHost("generator", "fake", {})
    host.worker = worker
    return host


def generate(host, keys=()):
    return asyncio.run(host.generate([GenerationRequest("p", SamplingParams(max_tokens=4))], keys))


def test_a_retryable_backend_error_comes_back_retryable():
    f = generate(host_with(Broken(BackendError("busy", retryable=True))))
    assert f == Failure("BackendError: busy", retryable=True, dead=False)


def test_a_dead_worker_is_reported_dead_whatever_it_raised():
    f = generate(host_with(Broken(RuntimeError("engine core gone"), dead=True)))
    assert isinstance(f, Failure) and f.dead and not f.retryable and "RuntimeError: engine core gone" in f.message


def test_an_unexpected_error_is_a_plain_failure_not_a_ray_exception():
    f = generate(host_with(Broken(ValueError("bad request"))))
    assert isinstance(f, Failure) and not f.dead and not f.retryable
    assert host_with(Broken(ValueError())).in_flight == 0


def test_a_host_remembers_only_the_most_recent_affinity_keys():
    host = WorkerHost("generator", "fake", {})
    asyncio.run(host.ready())
    for i in range(KEPT_AFFINITY_KEYS + 5):
        host.affinity_keys[f"k{i}"] = None
    generate(host, keys=["newest"])
    keys = host.stats()["affinity_keys"]
    assert len(keys) == KEPT_AFFINITY_KEYS and "newest" in keys and "k0" not in keys
