"""History parameters and CSV cells, pure: no server, no store."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest

from gateway.accounts import csvexport
from gateway.accounts.history import MAX_DAYS, history_query, iso, parse_time
from gateway.errors import InvalidRequest

NOW = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)


def test_defaults_are_the_last_30_days_by_day_as_json() -> None:
    wanted = history_query({}, now=lambda: NOW)
    assert (wanted.start, wanted.end) == (datetime(2026, 11, 1, 0, 30, tzinfo=UTC), NOW)
    assert (wanted.grouping, wanted.format) == ("day", "json")
    assert len(wanted.days()) == 31


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30", datetime(2026, 11, 30, tzinfo=UTC)),
        ("2026-11-30T12:00:00Z", datetime(2026, 11, 30, 12, tzinfo=UTC)),
        ("2026-11-30T12:00:00", datetime(2026, 11, 30, 12, tzinfo=UTC)),
        ("2026-12-01T01:00:00+02:00", datetime(2026, 11, 30, 23, tzinfo=UTC)),
        ("2026-11-30T09:15:00.250-05:00", datetime(2026, 11, 30, 14, 15, 0, 250000, tzinfo=UTC)),
    ],
)
def test_times_are_read_as_utc(text: str, expected: datetime) -> None:
    parsed = parse_time(text, field="from")
    assert parsed == expected
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_times_are_written_as_utc_with_z() -> None:
    assert iso(parse_time("2026-12-01T01:00:00+02:00", field="to")) == "2026-11-30T23:00:00.000Z"


def test_an_offset_moves_the_days_a_range_touches() -> None:
    wanted = history_query({"from": "2026-11-30T23:30:00-01:00", "to": "2026-12-01T03:00:00Z"})
    assert wanted.days() == [date(2026, 12, 1)]


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"from": "yesterday"}, "'from' must be an ISO 8601"),
        ({"to": "2026-13-01"}, "'to' must be an ISO 8601"),
        ({"from": "2026-11-30", "to": "2026-11-30"}, "'from' must be before 'to'"),
        ({"from": "2026-12-01", "to": "2026-11-01"}, "'from' must be before 'to'"),
        ({"from": "2025-01-01", "to": "2026-11-30"}, f"at most {MAX_DAYS} days"),
        ({"group": "week"}, "'group' must be one of day, route, key"),
        ({"group": "account"}, "'group' must be one of"),
        ({"format": "xml"}, "'format' must be json or csv"),
        ({"limit": "0"}, "'limit' must be an integer"),
        ({"limit": "³"}, "'limit' must be an integer"),
        ({"tz": "Europe/Paris"}, "unknown query parameter 'tz'"),
    ],
)
def test_bad_parameters_are_clear_400s(given: dict[str, str], words: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        history_query(given, now=lambda: NOW)
    assert refused.value.status == 400
    assert words in str(refused.value)


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-cmd", "'-cmd"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        (-3, "-3"),
        (None, ""),
        (True, "true"),
    ],
)
def test_cells_that_a_spreadsheet_would_run_are_quoted(value: object, cell: str) -> None:
    assert csvexport.cell(value) == cell


def test_lines_quote_commas_quotes_and_line_breaks_and_round_trip() -> None:
    values = ["a,b", 'say "hi"', "two\nlines", "", -5, None, "=1+1"]
    text = csvexport.line(values)
    assert text.endswith("\r\n")
    assert text == '"a,b","say ""hi""","two\nlines",,-5,,\'=1+1\r\n'
    (row,) = list(csv.reader(io.StringIO(text, newline="")))
    assert row == ["a,b", 'say "hi"', "two\nlines", "", "-5", "", "'=1+1"]


def test_document_has_the_header_first() -> None:
    text = csvexport.document(["x", "y"], [(1, "a"), (2, None)])
    assert text == "x,y\r\n1,a\r\n2,\r\n"
