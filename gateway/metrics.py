"""A small Prometheus registry: counters and one histogram, rendered as text format 0.0.4.

Per process (each uvicorn worker counts its own, as Prometheus expects of a scrape target).
Hand-written to keep the hot path to a dict increment and no new dependency.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1, **labels: str) -> None:
        key = tuple(labels.items())
        self.values[key] = self.values.get(key, 0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(labels)} {value:g}")
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.help = help_text
        self.bounds = sorted(buckets)
        self.counts: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(labels.items())
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0] * (len(self.bounds) + 1)
            self.sums[key] = 0.0
        counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sums[key] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, counts in sorted(self.counts.items()):
            total = 0
            for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
                total += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                bucket = _labels(labels, 'le="' + le + '"')
                lines.append(f"{self.name}_bucket{bucket} {total}")
            lines.append(f"{self.name}_sum{_labels(labels)} {self.sums[labels]:g}")
            lines.append(f"{self.name}_count{_labels(labels)} {total}")
        return lines


class Metrics:
    """Everything the gateway counts; one instance per app."""

    def __init__(self) -> None:
        self.requests = Counter(
            "creditgate_requests_total", "Proxied requests by route prefix and outcome."
        )
        self.reservations = Counter(
            "creditgate_reservations_total", "Reserve calls by answer (ok, insufficient, ...)."
        )
        self.settles = Counter(
            "creditgate_settles_total", "Reservations charged (credits in _credits)."
        )
        self.settled_credits = Counter("creditgate_settled_credits_total", "Credits charged.")
        self.refunds = Counter("creditgate_refunds_total", "Reservations refunded, by reason.")
        self.redis_errors = Counter(
            "creditgate_redis_errors_total", "Redis failures on the request path, by operation."
        )
        self.store_errors = Counter(
            "creditgate_store_errors_total", "Store failures on the request path."
        )
        self.upstream_latency = Histogram(
            "creditgate_upstream_seconds",
            "Time from sending a request upstream to its response headers.",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.requests,
            self.reservations,
            self.settles,
            self.settled_credits,
            self.refunds,
            self.redis_errors,
            self.store_errors,
            self.upstream_latency,
        ):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
