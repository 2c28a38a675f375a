"""Usage history and ledger exports: the parameters checked, the store asked, the views built.

Shared by the account holder's API, the admin API, the pages and ``creditgate usage export``.
Times in and out are ISO 8601 in UTC: ``from`` and ``to`` may be a date (midnight UTC) or a
date and time with ``Z`` or an offset (converted to UTC; none: taken as UTC). The range is
``[from, to)``; by default the last ``DEFAULT_DAYS`` days up to now; at most ``MAX_DAYS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from gateway.accounts.stored import orm_loaded
from gateway.errors import InvalidRequest
from gateway.services import Services
from store.records import LedgerRecord
from store.timefmt import utc_now

if TYPE_CHECKING:
    from store.history import Grouping, UsageBucket

DEFAULT_DAYS = 30
MAX_DAYS = 366
"""The longest range one request may ask for: a year of day buckets, a bounded scan."""
TOP_LIMIT = 100
EXPORT_PAGE = 5000
"""Ledger rows read per store round trip while an export streams."""

Format = Literal["json", "csv"]


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A checked request for history: the range, the grouping, the answer's format."""

    start: datetime
    end: datetime
    grouping: Grouping
    format: Format
    limit: int = 10

    def days(self) -> list[date]:
        """The UTC days the range touches, in order."""
        first = self.start.date()
        last = (self.end - timedelta(microseconds=1)).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def parse_time(value: str, *, field: str) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime; ``InvalidRequest`` otherwise."""
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"query {field!r} must be an ISO 8601 date or date-time in UTC "
            f"(2026-11-30 or 2026-11-30T12:00:00Z), not {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def iso(when: datetime) -> str:
    """An aware datetime as ISO 8601 in UTC with ``Z``, to the millisecond."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def history_query(
    query: Mapping[str, str],
    *,
    groupings: tuple[Grouping, ...] = ("day", "route", "key"),
    extra: tuple[str, ...] = (),
    now: Callable[[], datetime] = utc_now,
) -> HistoryQuery:
    """Check a history request's query: ``from``, ``to``, ``group``, ``format`` (and, for
    top accounts, ``limit``); ``extra`` names other parameters the caller reads itself."""
    known = ("from", "to", "group", "format", "limit", *extra)
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter {unknown[0]!r}; use {', '.join(repr(k) for k in known)}"
        )
    end = parse_time(query["to"], field="to") if "to" in query else now()
    start = (
        parse_time(query["from"], field="from")
        if "from" in query
        else end - timedelta(days=DEFAULT_DAYS)
    )
    if start >= end:
        raise InvalidRequest("query 'from' must be before 'to'")
    if end - start > timedelta(days=MAX_DAYS):
        raise InvalidRequest(f"the range from 'from' to 'to' must be at most {MAX_DAYS} days")
    grouping = query.get("group", groupings[0])
    if grouping not in groupings:
        raise InvalidRequest(
            f"query 'group' must be one of {', '.join(groupings)}, not {grouping!r}"
        )
    answer = query.get("format", "json")
    if answer not in ("json", "csv"):
        raise InvalidRequest(f"query 'format' must be json or csv, not {answer!r}")
    raw_limit = query.get("limit", "10")
    if not (raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= TOP_LIMIT):
        raise InvalidRequest(f"query 'limit' must be an integer between 1 and {TOP_LIMIT}")
    return HistoryQuery(start, end, grouping, answer, int(raw_limit))  # type: ignore[arg-type]


async def usage_history(
    services: Services, wanted: HistoryQuery, *, account_id: str | None
) -> list[UsageBucket]:
    """The buckets of ``wanted`` (every day of the range present for a day grouping)."""
    await orm_loaded()
    from store import history
    from store.database import session

    def read() -> list[UsageBucket]:
        with session(services.db) as db:
            return history.usage_history(
                db,
                start=wanted.start,
                end=wanted.end,
                grouping=wanted.grouping,
                account_id=account_id,
            )

    buckets = await asyncio.to_thread(read)
    if wanted.grouping == "day":
        return history.day_buckets(buckets, wanted.days())
    return buckets


async def top_accounts(services: Services, wanted: HistoryQuery) -> list[UsageBucket]:
    await orm_loaded()
    from store import history
    from store.database import session

    def read() -> list[UsageBucket]:
        with session(services.db) as db:
            return history.top_accounts(db, start=wanted.start, end=wanted.end, limit=wanted.limit)

    return await asyncio.to_thread(read)


async def ledger_rows(
    services: Services, wanted: HistoryQuery, *, account_id: str | None
) -> AsyncGenerator[LedgerRecord, None]:
    """Every movement of the range, oldest first, read ``EXPORT_PAGE`` rows at a time."""
    await orm_loaded()
    from store import history
    from store.database import session

    after: LedgerRecord | None = None
    while True:

        def read(last: LedgerRecord | None = after) -> list[LedgerRecord]:
            with session(services.db) as db:
                return history.ledger_range(
                    db,
                    start=wanted.start,
                    end=wanted.end,
                    account_id=account_id,
                    after=last,
                    limit=EXPORT_PAGE,
                )

        page = await asyncio.to_thread(read)
        for row in page:
            yield row
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1]


BUCKET_FIELD: dict[Grouping, str] = {
    "day": "day",
    "route": "route",
    "key": "keyId",
    "account": "accountId",
}


def bucket_view(bucket: UsageBucket, grouping: Grouping) -> dict[str, Any]:
    return {
        BUCKET_FIELD[grouping]: bucket.bucket,
        "requests": bucket.requests,
        "creditsCharged": bucket.credits_charged,
        "creditsRefunded": bucket.credits_refunded,
        "tokens": bucket.tokens,
    }


def history_view(
    wanted: HistoryQuery, buckets: list[UsageBucket], *, grouping: Grouping | None = None
) -> dict[str, Any]:
    """The JSON answer: the range, the grouping, the buckets and their totals."""
    group = grouping or wanted.grouping
    return {
        "from": iso(wanted.start),
        "to": iso(wanted.end),
        "group": group,
        "buckets": [bucket_view(b, group) for b in buckets],
        "totals": {
            "requests": sum(b.requests for b in buckets),
            "creditsCharged": sum(b.credits_charged for b in buckets),
            "creditsRefunded": sum(b.credits_refunded for b in buckets),
            "tokens": sum(b.tokens for b in buckets),
        },
    }


HISTORY_COLUMNS = ("bucket", "requests", "credits_charged", "credits_refunded", "tokens")
LEDGER_COLUMNS = (
    "occurred_at",
    "event_id",
    "account_id",
    "kind",
    "plan_delta",
    "bonus_delta",
    "credits_delta",
    "tokens",
    "request_id",
    "route",
    "key_id",
    "reason",
    "version",
)


def history_row(bucket: UsageBucket) -> tuple[object, ...]:
    return (
        bucket.bucket,
        bucket.requests,
        bucket.credits_charged,
        bucket.credits_refunded,
        bucket.tokens,
    )


def ledger_row(record: LedgerRecord) -> tuple[object, ...]:
    return (
        iso(record.occurred_at),
        record.event_id,
        record.account_id,
        record.kind,
        record.plan_delta,
        record.bonus_delta,
        record.credits_delta,
        record.tokens,
        record.request_id,
        record.route,
        record.key_id,
        record.reason,
        record.version,
    )


def ledger_entry_view(record: LedgerRecord) -> dict[str, Any]:
    """A movement in every JSON answer that lists them (the admin ledger, the history's)."""
    return {
        "id": record.event_id,
        "accountId": record.account_id,
        "kind": record.kind,
        "credits": record.credits_delta,
        "planCredits": record.plan_delta,
        "bonusCredits": record.bonus_delta,
        "tokens": record.tokens,
        "heldCredits": record.held_credits,
        "requestId": record.request_id or None,
        "route": record.route,
        "keyId": record.key_id,
        "reason": record.reason,
        "version": record.version,
        "at": iso(record.occurred_at),
    }
