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


def axis_labels(svg: str) -> list[str]:
    return re.findall(r"<text [^>]*text-anchor=\"\w+\">([^<]*)</text>", svg)


def test_a_few_bars_each_have_their_label_and_many_the_ends() -> None:
    one = str(bar_chart("By route", [("/api/projects/", 3)], unit="credits"))
    assert axis_labels(one) == ["/api/projects/"]  # once, under its bar, not at both ends
    routes = [("/a/", 1), ("/b/", 2), ("/c/", 3)]
    assert axis_labels(str(bar_chart("By route", routes, unit="credits"))) == ["/a/", "/b/", "/c/"]
    days = [(f"2026-11-{day:02d}", day) for day in range(1, 31)]
    assert axis_labels(str(bar_chart("Per day", days, unit="credits"))) == [
        "2026-11-01",
        "2026-11-30",
    ]
