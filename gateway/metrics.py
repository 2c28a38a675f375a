"""The gateway's metrics, on prometheus_client, and the text ``/metrics`` answers.

What each metric means and what to alert on: docs/operations.md, "Metrics". One ``Metrics``
per app, on a registry of its own (tests build many apps in one process). Where the values
live is prometheus_client's choice, made when it is imported, from ``PROMETHEUS_MULTIPROC_DIR``:

- unset (one worker, ``creditgate demo``, an app in a test): in this process, rendered with
  this process's ``process_*`` metrics;
- set (``creditgate serve --workers N``, ``gateway.multiprocess``): in one file per worker,
  and ``render`` sums every worker's files, so a scrape reads the same figures whichever
  worker answers it.

On the hot path a labelled series is looked up once and kept (``Series``): counting a request
is a dict lookup and prometheus_client's own increment.
"""

from __future__ import annotations

import os
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

from gateway import multiprocess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format, which ``render`` writes."""

UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Seconds: a backend's answer may take minutes (up to ``CREDITGATE_UPSTREAM_TIMEOUT``)."""
SCRIPT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
"""Seconds: a script runs in well under a millisecond; the rest is the round trip."""

M = TypeVar("M", Counter, Gauge, Histogram)

# No ``_created`` series: multiprocess mode has none, and one worker must read as several do.
# (prometheus_client's switch is per process; the gateway's processes are its own.)
disable_created_metrics()  # type: ignore[no-untyped-call]


class Series(Generic[M]):
    """A labelled metric's series by label values, each made once: ``series(*values)``."""

    __slots__ = ("metric", "_made")

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._made: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        made = self._made.get(values)
        if made is None:
            made = self._made[values] = self.metric.labels(*values)
        return made


class Metrics:
    """Everything one gateway app counts; the engine reports its scripts to ``script_ran``."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Series(
            Counter(
                "creditgate_requests",
                "Proxied requests by route prefix and outcome (how each ended).",
                ["route", "outcome"],
                registry=registry,
            )
        )
        self.reservations = Series(
            Counter(
                "creditgate_reservations",
                "Reserve script answers: ok, insufficient, rate_limited, duplicate, missing.",
                ["status"],
                registry=registry,
            )
        )
        self.refunds = Series(
            Counter(
                "creditgate_refunds",
                "Reservations refunded, by reason: upstream (a non-2xx answer, or a stream "
                "broken off), bad_gateway, gateway_timeout, client (gone), gateway (an error).",
                ["reason"],
                registry=registry,
            )
        )
        self.credits_charged = Counter(
            "creditgate_credits_charged", "Credits charged by settles.", registry=registry
        )
        self.credits_refunded = Counter(
            "creditgate_credits_refunded", "Credits given back by refunds.", registry=registry
        )
        self.open_reservations = Gauge(
            "creditgate_open_reservations",
            "Reservations held by this server's requests whose settle or refund has not ended.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.upstream_latency = Series(
            Histogram(
                "creditgate_upstream_latency_seconds",
                "Time from sending a request upstream to its response headers, by route prefix.",
                ["route"],
                registry=registry,
                buckets=UPSTREAM_BUCKETS,
            )
        )
        self.script_latency = Series(
            Histogram(
                "creditgate_script_latency_seconds",
                "Time from calling a credit script to its answer or failure, by script.",
                ["script"],
                registry=registry,
                buckets=SCRIPT_BUCKETS,
            )
        )
        self.redis_errors = Series(
            Counter(
                "creditgate_redis_errors",
                "Credit script calls that failed (Redis unreachable or erring), by script.",
                ["operation"],
                registry=registry,
            )
        )
        self.store_errors = Counter(
            "creditgate_store_errors",
            "Store of record failures on the request path (API key lookups).",
            registry=registry,
        )
        shared = multiprocess.directory()
        if shared is None:
            ProcessCollector(registry=registry)
            self._scraped = registry
        else:
            self._scraped = CollectorRegistry()
            self._scraped.register(multiprocess.Workers(shared, supervisor=os.getppid()))

    def script_ran(self, script: str, seconds: float, answered: bool) -> None:
        """The credit engine's observer (``gateway.credits.engine.ScriptObserver``)."""
        self.script_latency(script).observe(seconds)
        if not answered:
            self.redis_errors(script).inc()

    def render(self) -> bytes:
        """The Prometheus text of this server: every worker's figures in multiprocess mode."""
        return generate_latest(self._scraped)
