"""Prometheus metrics: what the node does, how fast, and how its dependencies answer."""

import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from chatserver.domain.ports import Transaction, UnitOfWork

T = TypeVar("T")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class PrometheusMetrics:
    """The node's metrics, in a registry of their own (so several nodes fit in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions = Gauge(
            "chatserver_sessions_online", "Sessions logged in on this node",
            registry=self.registry,
        )
        self.routed_total = Counter(
            "chatserver_messages_routed", "Deliveries routed, by outcome",
            ["outcome"], registry=self.registry,
        )
        self.waiting = Histogram(
            "chatserver_offline_queue_at_login", "Stored deliveries a login found waiting",
            buckets=(0, 1, 5, 20, 100, 200, 1000, 10000), registry=self.registry,
        )
        self.requests = Histogram(
            "chatserver_request_seconds", "Time to serve a request, by msgid",
            ["msgid"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.errors = Counter(
            "chatserver_errors", "Error replies, by errno", ["errno"], registry=self.registry,
        )
        self.dependency = Histogram(
            "chatserver_dependency_seconds", "Time of calls to a dependency",
            ["dependency"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )

    # The core's Metrics port.

    def routed(self, outcome: str, count: int = 1) -> None:
        if count:
            self.routed_total.labels(outcome).inc(count)

    def waiting_at_login(self, count: int) -> None:
        self.waiting.observe(count)

    # What the transport and the composition root report.

    def request(self, msgid: int, errno: int, seconds: float) -> None:
        self.requests.labels(str(msgid)).observe(seconds)
        if errno:
            self.errors.labels(str(errno)).inc()

    def count_sessions(self, sessions: Callable[[], int]) -> None:
        self.sessions.set_function(lambda: float(sessions()))

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics over HTTP from a thread of its own."""
        start_http_server(port, addr=host, registry=self.registry)


class TimedUnitOfWork:
    """A unit of work whose transactions are timed as the "database" dependency."""

    def __init__(self, inner: UnitOfWork, metrics: PrometheusMetrics) -> None:
        self.inner = inner
        self.histogram = metrics.dependency.labels("database")

    async def run(self, work: Callable[[Transaction], T]) -> T:
        started = time.perf_counter()
        try:
            return await self.inner.run(work)
        finally:
            self.histogram.observe(time.perf_counter() - started)

    async def aclose(self) -> None:
        await self.inner.aclose()
