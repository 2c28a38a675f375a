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
is ``[start, end)``. Movements without a route or key id (none carry them yet) fall in the
``None`` bucket of those groupings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
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
)
from sqlmodel import Session

from store.database import boundary
from store.models import LEDGER
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
    if dialect == "postgresql":
        # The UTC calendar day whatever the session's TimeZone.
        return cast(func.timezone("UTC", c.occurred_at), Date)
    # SQLite keeps the UTC wall time as text: its date() is the UTC day.
    return func.date(c.occurred_at)


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


def _history_statement(
    dialect: str, account_id: str | None, start: datetime, end: datetime, grouping: Grouping
) -> Select[Any]:
    bucket = _bucket_column(grouping, dialect).label("bucket")
    return (
        select(bucket, *_sums())
        .where(*_usage_filter(account_id, start, end))
        .group_by(bucket)
        .order_by(bucket)
    )


@boundary
def usage_history(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    grouping: Grouping,
    account_id: str | None = None,
) -> list[UsageBucket]:
    """The buckets with usage in ``[start, end)``, ordered by bucket (None first or last,
    as the database sorts nulls); ``account_id`` None: every account."""
    dialect = session.connection().dialect.name
    rows = session.execute(_history_statement(dialect, account_id, start, end, grouping))
    return [
        UsageBucket(
            bucket=_bucket_text(row.bucket),
            requests=int(row.requests),
            credits_charged=int(row.charged),
            credits_refunded=int(row.refunded),
            tokens=int(row.tokens),
        )
        for row in rows
    ]


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
    session: Session, *, start: datetime, end: datetime, limit: int
) -> list[UsageBucket]:
    """The ``limit`` accounts that spent the most credits in ``[start, end)``, most first
    (ties by account id); ``bucket`` is the account id."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    sums = _sums()
    stmt = (
        select(LEDGER.c.account_id.label("bucket"), *sums)
        .where(*_usage_filter(None, start, end))
        .group_by(LEDGER.c.account_id)
        .order_by(sums[1].desc(), LEDGER.c.account_id)
        .limit(limit)
    )
    return [
        UsageBucket(
            bucket=row.bucket,
            requests=int(row.requests),
            credits_charged=int(row.charged),
            credits_refunded=int(row.refunded),
            tokens=int(row.tokens),
        )
        for row in session.execute(stmt)
    ]


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
