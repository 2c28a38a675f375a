from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from store.timefmt import as_utc, to_datetime, to_ms

MS = st.integers(min_value=0, max_value=253_370_764_799_999)  # to 9998-12-31: room for any zone


@given(MS)
def test_milliseconds_round_trip_exactly(ms: int) -> None:
    moment = to_datetime(ms)
    assert moment.tzinfo is UTC
    assert to_ms(moment) == ms


@given(MS, st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_any_zone_means_the_same_instant(ms: int, offset_minutes: int) -> None:
    elsewhere = to_datetime(ms).astimezone(timezone(timedelta(minutes=offset_minutes)))
    assert to_ms(elsewhere) == ms
    assert as_utc(elsewhere) == to_datetime(ms) and as_utc(elsewhere).tzinfo is UTC


def test_naive_datetimes_are_utc() -> None:
    naive = datetime(2026, 11, 24, 23, 59, 59, 999_999)
    assert to_ms(naive) == 1_795_564_799_999
    assert as_utc(naive) == naive.replace(tzinfo=UTC)
    assert to_datetime(0) == datetime(1970, 1, 1, tzinfo=UTC)
