"""The gateway's metrics: one registry per app, series made once, the engine's observer, and
names as Prometheus expects them (base units, ``_total`` counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import SCRIPT_BUCKETS, Metrics, Tally, Timings
from tests.support.scrapes import series, total


def test_a_series_is_made_once_per_label_values() -> None:
    metrics = Metrics()
    charged = metrics.requests("/api/x/", "charged")
    assert metrics.requests("/api/x/", "charged") is charged
    assert metrics.requests("/api/x/", "refunded") is not charged


def test_each_app_counts_on_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.requests("/api/x/", "charged").inc()
    first.credits_charged.inc(3)
    first.flush()
    assert total(first.render().decode(), "creditgate_requests_total") == 1
    assert total(first.render().decode(), "creditgate_credits_charged_total") == 3
    assert total(second.render().decode(), "creditgate_requests_total") == 0


def test_an_app_of_one_process_adds_up_its_figures_until_a_flush() -> None:
    metrics = Metrics()
    metrics.requests("/api/x/", "charged").inc()
    metrics.upstream_latency("/api/x/").observe(0.2)
    text = metrics.render().decode()
    assert total(text, "creditgate_requests_total") == 0
    assert total(text, "creditgate_upstream_latency_seconds_count") == 0
    metrics.flush()
    text = metrics.render().decode()
    assert total(text, "creditgate_requests_total") == 1
    assert total(text, "creditgate_upstream_latency_seconds_count") == 1


def test_the_engine_observer_times_each_script_and_counts_its_failures() -> None:
    metrics = Metrics()
    metrics.script_ran("reserve", 0.0003, True)
    metrics.script_ran("reserve", 0.004, False)
    metrics.script_ran("settle", 0.0002, True)
    metrics.flush()
    text = metrics.render().decode()
    buckets = series(text, "creditgate_script_latency_seconds_bucket", "script", "le")
    assert buckets[("reserve", "0.0005")] == 1 and buckets[("reserve", "+Inf")] == 2
    assert series(text, "creditgate_script_latency_seconds_count", "script") == {
        ("reserve",): 2,
        ("settle",): 1,
    }
    assert series(text, "creditgate_redis_errors_total", "operation") == {("reserve",): 1}


def test_names_follow_the_prometheus_conventions() -> None:
    metrics = Metrics()
    metrics.requests("/api/x/", "charged").inc()
    metrics.reservations("ok").inc()
    metrics.refunds("upstream").inc()
    metrics.upstream_latency("/api/x/").observe(0.2)
    metrics.script_ran("reserve", 0.001, False)
    metrics.flush()
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    ours = {name: f.type for name, f in families.items() if name.startswith("creditgate_")}
    assert ours == {
        "creditgate_requests": "counter",
        "creditgate_reservations": "counter",
        "creditgate_refunds": "counter",
        "creditgate_credits_charged": "counter",
        "creditgate_credits_refunded": "counter",
        "creditgate_open_reservations": "gauge",
        "creditgate_upstream_latency_seconds": "histogram",
        "creditgate_script_latency_seconds": "histogram",
        "creditgate_redis_errors": "counter",
        "creditgate_store_errors": "counter",
    }
    for name, kind in ours.items():
        if kind == "counter":
            assert {s.name for s in families[name].samples} <= {name + "_total"}, name
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"} <= set(
        families
    )
    assert "process_start_time_seconds" in families


def test_timings_flush_what_the_histogram_would_have_observed() -> None:
    """A worker's buffered observations land in the buckets ``observe`` would have chosen,
    bounds included, and a flush with nothing new writes nothing."""
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", registry=registry, buckets=SCRIPT_BUCKETS)
    buffered = Histogram("buffered_seconds", "b", registry=registry, buckets=SCRIPT_BUCKETS)
    timings = Timings(buffered)
    values = [0.0, 0.0001, 0.00011, 0.0005, 0.003, 0.02, 1.0, 7.5, *SCRIPT_BUCKETS]
    for value in values:
        direct.observe(value)
        timings.observe(value)
    assert registry.get_sample_value("buffered_seconds_count") == 0  # not yet written
    timings.flush()
    timings.flush()

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        family = next(f for f in registry.collect() if f.name == name)
        return [(s.name.removeprefix(name), s.labels, s.value) for s in family.samples]

    assert samples("buffered_seconds") == samples("direct_seconds")


def test_a_tally_adds_up_increments_and_a_gauge_goes_down() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("open", "o", registry=registry)
    tally = Tally(gauge)
    for _ in range(3):
        tally.inc()
    tally.dec()
    tally.flush()
    tally.dec(2)
    tally.flush()
    assert registry.get_sample_value("open") == 0
    tally.inc(5)
    assert registry.get_sample_value("open") == 0  # written at the next flush
    tally.flush()
    assert registry.get_sample_value("open") == 5
