"""The sync worker's figures (``SyncStats``), and the endpoint that serves them to Prometheus
(``creditgate sync --metrics-port``).

Each worker serves its own, read from its ``SyncStats`` at each scrape, with its process
metrics; Prometheus sums over workers. (The gateway replicas used to re-print every worker's
figures from Redis, which a sum over replicas counted once per replica.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector


@dataclass(slots=True)
class SyncStats:
    """Counters since the worker started, and the lag seen by its latest pass."""

    applied: int = 0
    batches: int = 0
    errors: int = 0
    rejected: int = 0
    reaped: int = 0
    expired: int = 0
    passes: int = 0
    lag_seconds: float = 0.0


COUNTERS = {
    "applied": ("creditgate_sync_events_applied", "Outbox events written to the store of record."),
    "batches": ("creditgate_sync_batches", "Batches committed to the store of record."),
    "errors": ("creditgate_sync_errors", "Failed sync passes or jobs (retried on the next pass)."),
    "rejected": (
        "creditgate_sync_events_rejected",
        "Outbox events set aside: malformed, or refused by the store.",
    ),
    "reaped": (
        "creditgate_sync_reservations_reaped",
        "Reservations past their deadline refunded by the reaper.",
    ),
    "expired": (
        "creditgate_sync_subscriptions_expired",
        "Ended subscriptions downgraded by the expiry sweep.",
    ),
    "passes": ("creditgate_sync_passes", "Sync passes run, failed or not."),
}
"""``SyncStats`` counter -> its metric (``_total`` added) and help text."""


class StatsCollector(Collector):
    """One worker's ``SyncStats`` as metrics, read when Prometheus scrapes."""

    def __init__(self, stats: SyncStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        for field, (name, text) in COUNTERS.items():
            yield CounterMetricFamily(name, text, value=getattr(self.stats, field))
        yield GaugeMetricFamily(
            "creditgate_sync_lag_seconds",
            "Age of the oldest outbox event not yet in the store, at the latest pass.",
            value=self.stats.lag_seconds,
        )


def registry_of(stats: SyncStats) -> CollectorRegistry:
    """A registry of the worker's figures and its process metrics."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats))
    ProcessCollector(registry=registry)
    return registry


def serve_metrics(stats: SyncStats, host: str, port: int) -> Callable[[], None]:
    """Serve ``stats`` on ``http://host:port/metrics`` from a thread; returns the stop.

    Raises OSError when the address cannot be bound.
    """
    server, thread = start_http_server(port, host, registry=registry_of(stats))

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop
