"""Usage history from the ledger: sums per day, route, key or account, computed in SQL.

What a request did is read from its movements (kinds ``USAGE_KINDS``): its hold or charge
takes credits (``credits_delta`` < 0), a ``refund`` gives some back, and its tokens are on
the charge. Per bucket:

- ``credits_charged``: credits taken minus credits given back, what the requests cost;
- ``credits_refunded``: credits given back by refunds;
- ``requests``: distinct request ids among those movements;
- ``tokens``: the tokens the charges report.

This holds whether a request writes a hold, a refund and a charge, or one event for the
whole request. Times are UTC: a day bucket is a UTC calendar day (``YYYY-MM-DD``), a range
is ``[start, end)``. Movements without a route or key id (grants, older rows) fall in the
``None`` bucket of those groupings.

Speed: one account's history reads the ledger through its account-and-time index. Every
account's history and the top accounts read the daily roll-up (``store.usage_daily``) for the
whole UTC days of the range and the ledger only for the part days at its edges: the same
figures (see there for requests), without scanning every account's movements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Date,
    Select,
    and_,
    case,
    cast,
    distinct,
    func,
    literal,
    select,
    tuple_,
    union_all,
)
from sqlmodel import Session

from store.database import boundary
from store.models import LEDGER, USAGE_DAILY
from store.records import LedgerRecord
from store.timefmt import as_utc

Grouping = Literal["day", "route", "key", "account"]
GROUPINGS: tuple[Grouping, ...] = ("day", "route", "key", "account")

USAGE_KINDS = ("hold", "charge", "refund")
"""The movements a proxied request writes; the rest (grants, tier changes) are not usage."""


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """The usage in one bucket: a UTC day ``YYYY-MM-DD``, a route, a key id or an account
    id (None: movements that name no route or key)."""

    bucket: str | None
    requests: int
    credits_charged: int
    credits_refunded: int
    tokens: int


def _bucket_column(grouping: Grouping, dialect: str) -> ColumnElement[Any]:
    c = LEDGER.c
    if grouping == "route":
        return c.route
    if grouping == "key":
        return c.key_id
    if grouping == "account":
        return c.account_id
    return ledger_day(dialect)


def ledger_day(dialect: str) -> ColumnElement[Any]:
    """A ledger row's UTC calendar day, in SQL."""
    if dialect == "postgresql":
        # The UTC calendar day whatever the session's TimeZone.
        return cast(func.timezone("UTC", LEDGER.c.occurred_at), Date)
    # SQLite keeps the UTC wall time as text: its date() is the UTC day.
    return func.date(LEDGER.c.occurred_at)


def _usage_filter(
    account_id: str | None, start: datetime, end: datetime
) -> list[ColumnElement[bool]]:
    c = LEDGER.c
    where = [
        c.occurred_at >= as_utc(start),
        c.occurred_at < as_utc(end),
        c.kind.in_(USAGE_KINDS),
    ]
    if account_id is not None:
        where.append(c.account_id == account_id)
    return where


def _sums() -> list[ColumnElement[Any]]:
    c = LEDGER.c
    taken = func.coalesce(
        func.sum(case((and_(c.kind != "refund", c.credits_delta < 0), -c.credits_delta), else_=0)),
        0,
    )
    refunded = func.coalesce(
        func.sum(case((c.kind == "refund", c.credits_delta), else_=0)), literal(0)
    )
    return [
        func.count(distinct(c.request_id)).label("requests"),
        (taken - refunded).label("charged"),
        refunded.label("refunded"),
        func.coalesce(func.sum(c.tokens), 0).label("tokens"),
    ]


def _ledger_sums(
    dialect: str, account_id: str | None, start: datetime, end: datetime, grouping: Grouping
) -> Select[Any]:
    bucket = _bucket_column(grouping, dialect).label("bucket")
    return select(bucket, *_sums()).where(*_usage_filter(account_id, start, end)).group_by(bucket)


def _rollup_sums(start: date, end: date, grouping: Grouping) -> Select[Any]:
    """The roll-up's sums of the whole UTC days ``[start, end)``, every account."""
    u = USAGE_DAILY.c
    column = {
        "day": u.day,
        "route": func.nullif(u.route, ""),
        "key": func.nullif(u.key_id, ""),
        "account": u.account_id,
    }[grouping]
    bucket = column.label("bucket")
    return (
        select(
            bucket,
            func.sum(u.requests).label("requests"),
            func.sum(u.credits_charged).label("charged"),
            func.sum(u.credits_refunded).label("refunded"),
            func.sum(u.tokens).label("tokens"),
        )
        .where(u.day >= start, u.day < end)
        .group_by(bucket)
    )


def _sums_statement(
    dialect: str,
    account_id: str | None,
    start: datetime,
    end: datetime,
    grouping: Grouping,
    rollup: bool,
) -> Select[Any]:
    """Columns bucket, requests, charged, refunded, tokens: one account's from the ledger (its
    index makes that fast); every account's from the daily roll-up for the whole UTC days of
    the range and from the ledger for the part days at its edges, summed per bucket."""
    first, last = _whole_days(as_utc(start), as_utc(end))
    if not rollup or account_id is not None or first >= last:
        return _ledger_sums(dialect, account_id, start, end, grouping)
    parts = [_rollup_sums(first.date(), last.date(), grouping)]
    if start < first:
        parts.append(_ledger_sums(dialect, None, start, first, grouping))
    if last < end:
        parts.append(_ledger_sums(dialect, None, last, end, grouping))
    if len(parts) == 1:
        return parts[0]
    every = union_all(*parts).subquery()
    return select(
        every.c.bucket,
        func.sum(every.c.requests).label("requests"),
        func.sum(every.c.charged).label("charged"),
        func.sum(every.c.refunded).label("refunded"),
        func.sum(every.c.tokens).label("tokens"),
    ).group_by(every.c.bucket)


def _whole_days(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The first and last UTC midnights in ``[start, end]``: the whole days between them."""
    first = datetime.combine(start.date(), time(), UTC)
    if first < start:
        first += timedelta(days=1)
    return first, datetime.combine(end.date(), time(), UTC)


@boundary
def usage_history(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    grouping: Grouping,
    account_id: str | None = None,
    rollup: bool = True,
) -> list[UsageBucket]:
    """The buckets with usage in ``[start, end)``, ordered by bucket (None first or last,
    as the database sorts nulls); ``account_id`` None: every account. ``rollup`` False: from
    the ledger alone (the benchmark's baseline, the audit's check of the roll-up)."""
    dialect = session.connection().dialect.name
    sums = _sums_statement(dialect, account_id, start, end, grouping, rollup).subquery()
    rows = session.execute(select(sums).order_by(sums.c.bucket))
    return [_usage_bucket(row) for row in rows]


@boundary
def key_spend(session: Session, *, account_id: str, since: datetime) -> dict[str, int]:
    """Credits each key of an account was charged from ``since`` on (charges, by the key the
    ledger names): what a key's credit limit counts, as far as the store has it."""
    c = LEDGER.c
    stmt = (
        select(c.key_id, func.coalesce(func.sum(-c.credits_delta), 0))
        .where(
            c.account_id == account_id,
            c.kind == "charge",
            c.key_id.is_not(None),
            c.occurred_at >= as_utc(since),
        )
        .group_by(c.key_id)
    )
    return {str(key_id): max(0, int(spent)) for key_id, spent in session.execute(stmt)}


@boundary
def top_accounts(
    session: Session, *, start: datetime, end: datetime, limit: int, rollup: bool = True
) -> list[UsageBucket]:
    """The ``limit`` accounts that spent the most credits in ``[start, end)``, most first
    (ties by account id); ``bucket`` is the account id. ``rollup`` as ``usage_history``."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    dialect = session.connection().dialect.name
    sums = _sums_statement(dialect, None, start, end, "account", rollup).subquery()
    stmt = select(sums).order_by(sums.c.charged.desc(), sums.c.bucket).limit(limit)
    return [_usage_bucket(row) for row in session.execute(stmt)]


def _usage_bucket(row: Any) -> UsageBucket:
    return UsageBucket(
        bucket=_bucket_text(row.bucket),
        requests=int(row.requests),
        credits_charged=int(row.charged),
        credits_refunded=int(row.refunded),
        tokens=int(row.tokens),
    )


@boundary
def ledger_range(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    account_id: str | None = None,
    after: LedgerRecord | None = None,
    limit: int = 5000,
) -> list[LedgerRecord]:
    """Movements of every kind in ``[start, end)``, oldest first (occurred_at, version,
    event id), ``limit`` at a time: ``after`` is the last row of the previous page."""
    c = LEDGER.c
    where: list[ColumnElement[bool]] = [c.occurred_at >= as_utc(start), c.occurred_at < as_utc(end)]
    if account_id is not None:
        where.append(c.account_id == account_id)
    if after is not None:
        where.append(
            tuple_(c.occurred_at, c.version, c.event_id)
            > tuple_(
                literal(after.occurred_at, LEDGER.c.occurred_at.type),
                literal(after.version),
                literal(after.event_id),
            )
        )
    stmt = select(LEDGER).where(*where).order_by(c.occurred_at, c.version, c.event_id).limit(limit)
    return [_record(row._mapping) for row in session.execute(stmt)]


def _record(row: Any) -> LedgerRecord:
    return LedgerRecord(
        event_id=row["event_id"],
        account_id=row["account_id"],
        kind=row["kind"],
        plan_delta=int(row["plan_delta"]),
        bonus_delta=int(row["bonus_delta"]),
        credits_delta=int(row["credits_delta"]),
        tokens=int(row["tokens"]),
        request_id=row["request_id"],
        reason=row["reason"],
        occurred_at=as_utc(row["occurred_at"]),
        version=int(row["version"]),
        recorded_at=as_utc(row["recorded_at"]),
        route=row["route"],
        key_id=row["key_id"],
    )


def _bucket_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def day_buckets(buckets: Sequence[UsageBucket], days: Sequence[date]) -> list[UsageBucket]:
    """``buckets`` of a day grouping with every day of ``days`` present (zeros where none):
    a chart's series, pure."""
    found = {b.bucket: b for b in buckets}
    return [found.get(d.isoformat()) or UsageBucket(d.isoformat(), 0, 0, 0, 0) for d in days]
