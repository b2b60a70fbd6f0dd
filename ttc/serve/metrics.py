"""The server's Prometheus metrics, in a registry of its own (two apps in one process do not mix)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Kinds of tokens a search spends, as in ttc's Usage.
TOKEN_KINDS = ("generated_tokens", "prompt_tokens", "cached_prompt_tokens", "verifier_tokens", "lost_tokens")


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ttc_requests", "Requests answered, by endpoint and HTTP status.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("ttc_request_seconds", "Time from arrival to the full answer.", ["endpoint"],
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
                                 registry=self.registry)
        self.tokens = Counter("ttc_tokens", "Tokens the searches spent, by kind.", ["kind"], registry=self.registry)
        self.queue_depth = Gauge("ttc_queue_depth", "Requests waiting for a search slot.", registry=self.registry)
        self.in_flight = Gauge("ttc_requests_in_flight", "Requests being searched.", registry=self.registry)
        self.errors = Counter("ttc_errors", "Requests that failed, by kind.", ["kind"], registry=self.registry)

    def count_usage(self, usage: dict) -> None:
        for kind in TOKEN_KINDS:
            value = usage.get(kind, 0)
            if value:
                self.tokens.labels(kind).inc(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
