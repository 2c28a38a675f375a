"""CSV for exports: RFC 4180 quoting, and cells a spreadsheet will not run as formulas.

A ledger's ``reason`` and a route are text people typed: ``=HYPERLINK(...)`` opened in a
spreadsheet would run. A text cell that starts with ``= + - @``, a tab or a carriage return
gets a leading ``'`` (OWASP's advice), which spreadsheets show as text and drop. Numbers are
written as they are (a negative delta stays ``-3``); None is an empty cell. Lines end CRLF.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str:
    """One value as CSV cell text (before quoting), safe to open in a spreadsheet."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def line(values: Sequence[object]) -> str:
    """One CSV record, quoted where needed (commas, quotes, line breaks), ending CRLF."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([cell(v) for v in values])
    return out.getvalue()


def document(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    return "".join([line(header), *(line(r) for r in rows)])


async def stream(
    header: Sequence[str], rows: AsyncIterable[Sequence[object]]
) -> AsyncIterator[str]:
    """The header line, then a line per row as the rows arrive."""
    yield line(header)
    async for row in rows:
        yield line(row)
