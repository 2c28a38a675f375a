"""The console's live overview, from the gateway's own metrics (``gateway.metrics``).

Pure over a registry: requests, 429s by reason and refunds as this replica (or, with
``--workers``, this process) counted them; the rate is over the time since the previous look.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry


@dataclass(frozen=True, slots=True)
class Overview:
    requests: int
    insufficient: int
    rate_limited: int
    key_credit_limit: int
    key_rate_limited: int
    refunds: int
    rps: float
    sync_lag: str


def _sum(registry: CollectorRegistry, name: str, **labels: str) -> int:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name != name:
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return int(total)


@dataclass(slots=True)
class Rate:
    """Requests per second between two looks at the counter."""

    at: float = 0.0
    count: int = 0

    def update(self, count: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        rate = (count - self.count) / (now - self.at) if self.at and now > self.at else 0.0
        self.at, self.count = now, count
        return max(rate, 0.0)


def overview(registry: CollectorRegistry, rate: Rate, sync_lag: str) -> Overview:
    requests = _sum(registry, "creditgate_requests_total")
    return Overview(
        requests=requests,
        insufficient=_sum(registry, "creditgate_requests_total", outcome="insufficient"),
        rate_limited=_sum(registry, "creditgate_requests_total", outcome="rate_limited"),
        key_credit_limit=_sum(registry, "creditgate_requests_total", outcome="key_credit_limit"),
        key_rate_limited=_sum(registry, "creditgate_requests_total", outcome="key_rate_limited"),
        refunds=_sum(registry, "creditgate_refunds_total"),
        rps=rate.update(requests),
        sync_lag=sync_lag,
    )
