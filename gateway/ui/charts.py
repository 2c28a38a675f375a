"""Bar charts as inline SVG, drawn on the server: no script, no CDN, works offline.

Pure: labels and values in, markup out (escaped). Each chart has a ``<title>`` and a
``<desc>`` for screen readers, each bar a ``<title>`` with its exact value, and the figures are
also in a table next to it on the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT, PAD = 600, 200, 28
MAX_BAR = 48
"""A bar's widest: one route alone is a bar, not a block."""
EACH_LABELLED = 6
"""Up to this many bars (a few routes) each has its label below it; more (a month of days)
have the first and last labelled, at the axis's ends."""
BAR = "#1d4ed8"
"""Blue on white: a contrast ratio over 7:1."""


def bar_chart(title: str, points: Sequence[tuple[str, int]], *, unit: str) -> Markup:
    """A bar per point, scaled to the largest value (negative values drawn as zero)."""
    top = max((v for _, v in points), default=0)
    scale = max(top, 1)
    count = max(len(points), 1)
    slot = (WIDTH - 2 * PAD) / count
    bars = []
    for i, (label, value) in enumerate(points):
        height = (HEIGHT - 2 * PAD) * max(value, 0) / scale
        width = min(slot * 0.8, MAX_BAR)
        x = PAD + i * slot + (slot - width) / 2
        y = HEIGHT - PAD - height
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
            f'fill="{BAR}" data-label="{escape(label)}" data-value="{value}">'
            f"<title>{escape(label)}: {value} {escape(unit)}</title></rect>"
        )
    desc = f"{len(points)} bars, highest {top} {unit}"
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>"
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        f'stroke="#374151"/>'
        f'<text x="{PAD}" y="16" font-size="12" fill="#111827">{top} {escape(unit)}</text>'
        f"{''.join(bars)}{_axis_labels([label for label, _ in points], slot)}</svg>"
    )


def _axis_labels(labels: Sequence[str], slot: float) -> str:
    """The labels under the axis: each bar's (centred below it), or the ends' when many."""
    if len(labels) <= EACH_LABELLED:
        placed = [(PAD + (i + 0.5) * slot, "middle", label) for i, label in enumerate(labels)]
    else:
        placed = [(PAD, "start", labels[0]), (WIDTH - PAD, "end", labels[-1])]
    return "".join(
        f'<text x="{x:.1f}" y="{HEIGHT - 8}" font-size="11" fill="#111827" '
        f'text-anchor="{anchor}">{escape(label)}</text>'
        for x, anchor, label in placed
    )
