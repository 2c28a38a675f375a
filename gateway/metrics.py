"""The gateway's metrics, on prometheus_client, and the text ``/metrics`` answers.

What each metric means and what to alert on: docs/operations.md, "Metrics". One ``Metrics``
per app, on a registry of its own (tests build many apps in one process). Where the values
live is prometheus_client's choice, made when it is imported, from ``PROMETHEUS_MULTIPROC_DIR``:

- unset (one worker, ``creditgate demo``, an app in a test): in this process, rendered with
  this process's ``process_*`` metrics;
- set (``creditgate serve --workers N``, ``gateway.multiprocess``): in one file per worker,
  and ``render`` sums every worker's files, so a scrape reads the same figures whichever
  worker answers it.

On the hot path a labelled series is looked up once and kept (``Series``), and its figures are
added up in the process (``Tally``, ``Timings``) and written to prometheus_client every
``FLUSH_INTERVAL`` by the app's lifespan (``flushing``), before a scrape, and at shutdown;
so ``render`` and the registry read them as of the last ``flush``. In multiprocess mode
prometheus_client writes every increment to its file under a lock, some 80 µs per request;
in one process it still takes a lock and checks its arguments: 0.6 µs an increment and
1.6 µs a histogram observation, against 0.1 and 0.26 µs here (about 6 µs a request).
"""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

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

FLUSH_INTERVAL = 1.0
"""Seconds between a worker's writes of its figures in multiprocess mode."""


class Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Level(Count, Protocol):
    def dec(self, amount: float = 1) -> None: ...


class Timing(Protocol):
    def observe(self, amount: float) -> None: ...


class Tally:
    """A counter's or gauge's series whose increments are added up here until ``flush``."""

    __slots__ = ("_target", "_pending")

    def __init__(self, target: Counter | Gauge) -> None:
        self._target = target
        self._pending = 0.0

    def inc(self, amount: float = 1) -> None:
        self._pending += amount

    def dec(self, amount: float = 1) -> None:
        self._pending -= amount

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._target.inc(pending)  # a Gauge's may be negative: it moves down


class Timings:
    """A histogram's series whose observations are counted by bucket here until ``flush``."""

    __slots__ = ("_target", "_bounds", "_counts", "_sum")

    def __init__(self, target: Histogram) -> None:
        self._target = target
        self._bounds: list[float] = list(target._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        # The first bound at or above the value, as Histogram.observe picks it (+Inf last).
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        counts = self._counts
        if any(counts):
            self._counts = [0] * len(counts)
            total, self._sum = self._sum, 0.0
            for bucket, count in zip(self._target._buckets, counts, strict=True):
                if count:
                    bucket.inc(count)
            self._target._sum.inc(total)


M = TypeVar("M", Counter, Gauge, Histogram)
W = TypeVar("W")

# No ``_created`` series: multiprocess mode has none, and one worker must read as several do.
# (prometheus_client's switch is per process; the gateway's processes are its own.)
disable_created_metrics()  # type: ignore[no-untyped-call]


class Series(Generic[M, W]):
    """A labelled metric's series by label values, each made once: ``series(*values)``; with
    ``wrap``, each series is the wrapper of prometheus_client's."""

    __slots__ = ("metric", "_made", "_wrap")

    def __init__(self, metric: M, wrap: Callable[[M], W]) -> None:
        self.metric: M = metric
        self._made: dict[tuple[str, ...], W] = {}
        self._wrap: Callable[[M], W] = wrap

    def __call__(self, *values: str) -> W:
        made = self._made.get(values)
        if made is None:
            made = self._made[values] = self._wrap(self.metric.labels(*values))
        return made


class Metrics:
    """Everything one gateway app counts; the engine reports its scripts to ``script_ran``."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        shared = multiprocess.directory()
        self._buffered: list[Tally | Timings] = []
        count = self._tally
        timing = self._timings
        self.requests: Series[Counter, Count] = Series(
            Counter(
                "creditgate_requests",
                "Proxied requests by route prefix and outcome (how each ended).",
                ["route", "outcome"],
                registry=registry,
            ),
            count,
        )
        self.reservations: Series[Counter, Count] = Series(
            Counter(
                "creditgate_reservations",
                "Reserve script answers: ok, insufficient, rate_limited, duplicate, missing.",
                ["status"],
                registry=registry,
            ),
            count,
        )
        self.refunds: Series[Counter, Count] = Series(
            Counter(
                "creditgate_refunds",
                "Reservations refunded, by reason: upstream (a non-2xx answer, or a stream "
                "broken off), bad_gateway, gateway_timeout, client (gone), gateway (an error).",
                ["reason"],
                registry=registry,
            ),
            count,
        )
        self.credits_charged: Count = count(
            Counter("creditgate_credits_charged", "Credits charged by settles.", registry=registry)
        )
        self.credits_refunded: Count = count(
            Counter(
                "creditgate_credits_refunded", "Credits given back by refunds.", registry=registry
            )
        )
        self.open_reservations: Level = count(
            Gauge(
                "creditgate_open_reservations",
                "Reservations held by this server's requests whose settle or refund has not ended.",
                registry=registry,
                multiprocess_mode="livesum",
            )
        )
        self.upstream_latency: Series[Histogram, Timing] = Series(
            Histogram(
                "creditgate_upstream_latency_seconds",
                "Time from sending a request upstream to its response headers, by route prefix.",
                ["route"],
                registry=registry,
                buckets=UPSTREAM_BUCKETS,
            ),
            timing,
        )
        self.script_latency: Series[Histogram, Timing] = Series(
            Histogram(
                "creditgate_script_latency_seconds",
                "Time from calling a credit script to its answer or failure, by script.",
                ["script"],
                registry=registry,
                buckets=SCRIPT_BUCKETS,
            ),
            timing,
        )
        self.redis_errors: Series[Counter, Count] = Series(
            Counter(
                "creditgate_redis_errors",
                "Credit script calls that failed (Redis unreachable or erring), by script.",
                ["operation"],
                registry=registry,
            ),
            count,
        )
        self.store_errors: Count = count(
            Counter(
                "creditgate_store_errors",
                "Store of record failures on the request path (API key lookups).",
                registry=registry,
            )
        )
        if shared is None:
            ProcessCollector(registry=registry)
            self._scraped = registry
        else:
            self._scraped = CollectorRegistry()
            self._scraped.register(multiprocess.Workers(shared, supervisor=os.getppid()))

    def _tally(self, series: Counter | Gauge) -> Tally:
        self._buffered.append(tally := Tally(series))
        return tally

    def _timings(self, series: Histogram) -> Timings:
        self._buffered.append(timings := Timings(series))
        return timings

    def script_ran(self, script: str, seconds: float, answered: bool) -> None:
        """The credit engine's observer (``gateway.credits.engine.ScriptObserver``)."""
        self.script_latency(script).observe(seconds)
        if not answered:
            self.redis_errors(script).inc()

    def flush(self) -> None:
        """Write what this process has added up to prometheus_client. Call it from the event
        loop's thread, the one that counts."""
        for buffered in self._buffered:
            buffered.flush()

    async def flushing(self, interval: float = FLUSH_INTERVAL) -> None:
        """``flush`` every ``interval`` seconds, until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(interval)
                self.flush()
        finally:
            self.flush()

    def render(self) -> bytes:
        """The Prometheus text of this server as of the last ``flush``: every worker's figures
        in multiprocess mode."""
        return generate_latest(self._scraped)
