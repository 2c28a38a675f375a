"""Milliseconds since the epoch (Redis's clock, the engine's unit) <-> aware UTC datetimes.

The store keeps timezone-aware UTC datetimes; SQLite hands back naive ones, which mean UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_datetime(ms: int) -> datetime:
    """An aware UTC datetime for ``ms`` milliseconds since the epoch (exact, no float rounding)."""
    return EPOCH + timedelta(milliseconds=ms)


def to_ms(dt: datetime) -> int:
    """Milliseconds since the epoch, rounded down; a naive datetime is taken as UTC."""
    return (as_utc(dt) - EPOCH) // _MS


def as_utc(dt: datetime) -> datetime:
    """The same instant as an aware UTC datetime; a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)
