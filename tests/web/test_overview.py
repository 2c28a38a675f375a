"""The console's overview, from the gateway's own metrics: requests and refusals by reason."""

from __future__ import annotations

from gateway.metrics import Metrics
from gateway.ui.overview import Rate, overview


def test_the_overview_counts_each_refusal_by_its_reason() -> None:
    metrics = Metrics()
    outcomes = ["charged"] * 5 + ["insufficient", "rate_limited", "key_credit_limit"] * 2
    for outcome in [*outcomes, "key_rate_limited"]:
        metrics.requests("/api/", outcome).inc()  # type: ignore[arg-type]
    metrics.flush()  # as the console does before it reads the registry
    rate = Rate()
    rate.update(0, now=10.0)

    seen = overview(metrics.registry, rate, "none")

    assert (seen.requests, seen.insufficient, seen.rate_limited) == (12, 2, 2)
    assert (seen.key_credit_limit, seen.key_rate_limited) == (2, 1)
