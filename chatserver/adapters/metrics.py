"""Prometheus metrics: what the node does, how fast, and how its dependencies answer."""

import bisect
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from chatserver.domain.ports import Transaction, UnitOfWork

T = TypeVar("T")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class CounterByLabel(Collector):
    """A counter with one label, counted in plain numbers and exported as prometheus_client's
    Counter would be. Counted on the event loop's thread only and read by the scrape thread:
    a value is read or replaced whole under the GIL, so no lock (the library takes one, and a
    labels() lookup, per count: several times what the count itself costs)."""

    def __init__(self, name: str, documentation: str, label: str,
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.values: dict[str, list[float]] = {}  # label value -> [count, created]
        registry.register(self)

    def inc(self, label_value: str, amount: float = 1) -> None:
        value = self.values.get(label_value)
        if value is None:
            value = self.values[label_value] = [0.0, time.time()]
        value[0] += amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for label_value, (count, created) in list(self.values.items()):
            family.add_metric([label_value], count, created=created if _created() else None)
        yield family


class HistogramByLabel(Collector):
    """A histogram with one label, counted in plain numbers (as CounterByLabel) and exported as
    prometheus_client's Histogram would be."""

    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = [float(bound) for bound in buckets]
        if self.bounds[-1] != math.inf:
            self.bounds.append(math.inf)
        go_string: Any = floatToGoString  # unannotated in prometheus_client
        self.bound_texts = [go_string(b) for b in self.bounds]
        # label value -> observations per bucket (not cumulative), then their sum and created
        self.values: dict[str, list[float]] = {}
        registry.register(self)

    def observe(self, label_value: str, amount: float) -> None:
        value = self.values.get(label_value)
        if value is None:
            value = self.values[label_value] = [0.0] * len(self.bounds) + [0.0, time.time()]
        # The first bucket whose upper bound is at least amount, as Histogram.observe finds it.
        value[bisect.bisect_left(self.bounds, amount)] += 1
        value[-2] += amount

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for label_value, value in list(self.values.items()):
            value = list(value)  # one copy, so that every figure is of the same moment
            cumulative, buckets = 0.0, []
            for bound, count in zip(self.bound_texts, value[:-2], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([label_value], buckets, value[-2])
            if _created():
                family.samples.append(
                    Sample(f"{self.name}_created", {self.label: label_value}, value[-1])
                )
        yield family


class CountedBy(Collector):
    """A counter with one label whose values are read from callables at each scrape (counts
    kept by the core, which knows no Prometheus)."""

    def __init__(self, name: str, documentation: str, label: str,
                 counts: dict[str, Callable[[], float]], registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.label, self.counts = name, documentation, label, counts
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for label_value, count in self.counts.items():
            family.add_metric([label_value], count())
        yield family


def _created() -> bool:
    """Whether _created series are exported (PROMETHEUS_DISABLE_CREATED_SERIES unset)."""
    return bool(getattr(prometheus_client.metrics, "_use_created", True))


class PrometheusMetrics:
    """The node's metrics, in a registry of their own (so several nodes fit in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions = Gauge(
            "chatserver_sessions_online", "Sessions logged in on this node",
            registry=self.registry,
        )
        self.routed_total = CounterByLabel(
            "chatserver_messages_routed", "Deliveries routed, by outcome", "outcome",
            self.registry,
        )
        self.waiting = Histogram(
            "chatserver_offline_queue_at_login", "Stored deliveries a login found waiting",
            buckets=(0, 1, 5, 20, 100, 200, 1000, 10000), registry=self.registry,
        )
        self.inbox_batches = Histogram(
            "chatserver_inbox_batch_entries",
            "Inbox entries written by one transaction (group commit)",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 2000, 10000), registry=self.registry,
        )
        self.requests = HistogramByLabel(
            "chatserver_request_seconds", "Time to serve a request, by msgid", "msgid",
            LATENCY_BUCKETS, self.registry,
        )
        self.errors = CounterByLabel(
            "chatserver_errors", "Error replies, by errno", "errno", self.registry,
        )
        self.dependency = Histogram(
            "chatserver_dependency_seconds", "Time of calls to a dependency",
            ["dependency"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        # The label text of each msgid and errno, made once.
        self._label_texts: dict[int, str] = {}

    # The core's Metrics port.

    def routed(self, outcome: str, count: int = 1) -> None:
        if count:
            self.routed_total.inc(outcome, count)

    def waiting_at_login(self, count: int) -> None:
        self.waiting.observe(count)

    def inbox_batch(self, entries: int) -> None:
        self.inbox_batches.observe(entries)

    # What the transport and the composition root report.

    def request(self, msgid: int, errno: int, seconds: float) -> None:
        texts = self._label_texts
        self.requests.observe(texts.get(msgid) or texts.setdefault(msgid, str(msgid)), seconds)
        if errno:
            self.errors.inc(texts.get(errno) or texts.setdefault(errno, str(errno)))

    def count_sessions(self, sessions: Callable[[], int]) -> None:
        self.sessions.set_function(lambda: float(sessions()))

    def watch_webhooks(self, depth: Callable[[], float], oldest_age: Callable[[], float],
                       delivered: Callable[[], float], failed: Callable[[], float],
                       dead: Callable[[], float] = lambda: 0.0) -> None:
        """The webhook outbox: rows waiting and the oldest's age (as of the deliverer's last
        look), POSTs taken and failed, and dead letters (events set aside)."""
        Gauge("chatserver_webhook_outbox_rows", "Events waiting in the webhook outbox",
              registry=self.registry).set_function(depth)
        Gauge("chatserver_webhook_outbox_oldest_seconds",
              "Age of the oldest event waiting in the webhook outbox (0: none waits)",
              registry=self.registry).set_function(oldest_age)
        Gauge("chatserver_webhook_dead_letters",
              "Events the receiver kept refusing, set aside (chatserver admin webhooks dead)",
              registry=self.registry).set_function(dead)
        CountedBy("chatserver_webhook_posts", "Webhook POSTs, by outcome", "outcome",
                  {"delivered": delivered, "failed": failed}, self.registry)

    def watch_after_event(self, queued: Callable[[], float], dropped: Callable[[], float],
                          failed: Callable[[], float]) -> None:
        """The in-memory queue of after_event: its length, and events dropped (queue full)
        or failed (the hook raised or took too long)."""
        Gauge("chatserver_after_event_queue", "Events waiting for after_event",
              registry=self.registry).set_function(queued)
        CountedBy("chatserver_after_event_lost", "Events after_event did not take, by reason",
                  "reason", {"dropped": dropped, "failed": failed}, self.registry)


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
