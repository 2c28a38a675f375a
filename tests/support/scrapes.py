"""Reading a ``/metrics`` answer as Prometheus would: with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def series(text: str, sample: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The values of the samples named ``sample``, by the values of ``labels`` (summed over
    any other label); a text that does not parse fails the test."""
    found: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample:
                key = tuple(s.labels[name] for name in labels)
                found[key] = found.get(key, 0.0) + s.value
    return found


def total(text: str, sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` that carry ``labels`` (0 when there is none)."""
    found = series(text, sample, *labels)
    return found.get(tuple(labels.values()), 0.0)


def text_of(registry: CollectorRegistry) -> str:
    """What a scrape of ``registry`` reads."""
    return generate_latest(registry).decode()
