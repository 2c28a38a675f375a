"""The SVG charts, pure: bars scaled to the largest value, exact values, text escaped."""

from __future__ import annotations

import re

from gateway.ui.charts import HEIGHT, PAD, bar_chart


def heights(svg: str) -> list[float]:
    return [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]


def test_bars_are_scaled_to_the_largest_value_and_carry_it_exactly() -> None:
    svg = str(bar_chart("Credits", [("a", 2), ("b", 4), ("c", 0), ("d", -3)], unit="credits"))
    full = HEIGHT - 2 * PAD
    assert heights(svg) == [full / 2, full, 0.0, 0.0]
    assert re.findall(r'data-value="(-?\d+)"', svg) == ["2", "4", "0", "-3"]
    assert "<title>b: 4 credits</title>" in svg
    assert 'role="img"' in svg and 'aria-label="Credits"' in svg


def test_labels_are_escaped_and_an_empty_chart_draws() -> None:
    svg = str(bar_chart("<x>", [('/api/"><script>', 1)], unit="u"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "<rect" not in str(bar_chart("empty", [], unit="u"))
