"""The sync worker's write path: credit movements into the ledger, snapshots onto accounts.

Exactly once under replays: a ledger row whose ``event_id`` exists is skipped (``INSERT ..
ON CONFLICT DO NOTHING``), and only the rows the insert wrote (its RETURNING) are added to the
daily usage roll-up (``store.usage_daily``), in the same transaction. Never backwards: an
account's snapshot is written only when the batch's highest version for it is above the
stored one. Rows are written in key order, accounts before ledger before roll-up, so
concurrent callers with overlapping batches wait on each other instead of deadlocking.

Speed: on PostgreSQL each table gets one ``INSERT .. SELECT * FROM unnest(<column arrays>)``,
a short constant statement whatever the batch size (a multi-row VALUES list of thousands of
parameters costs more to build and parse than to run). SQLite uses SQLAlchemy's batched
executemany ("insertmanyvalues").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    String,
    Table,
    TextClause,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlmodel import Session

from store import snapshots, usage_daily
from store.database import boundary
from store.errors import StoreError
from store.models import ACCOUNTS, LEDGER, USAGE_DAILY, UTCDateTime
from store.records import Movement
from store.timefmt import to_datetime, utc_now

SNAPSHOT_COLUMNS = (*snapshots.COLUMNS, "updated_at")
"""What a newer movement changes on an existing account (not its email or creation time)."""


@boundary
def apply_movements(session: Session, *, movements: Sequence[Movement]) -> int:
    """Record movements exactly once and move account snapshots forward; return new ledger rows.

    Works in the caller's transaction: the ledger rows and the snapshots commit together.
    Each account's snapshot comes from its highest-version movement in the batch; a missing
    account is created from it (email None).
    """
    if not movements:
        return 0
    now = utc_now()
    latest: dict[str, Movement] = {}
    for m in movements:
        seen = latest.get(m.account_id)
        if seen is None or (m.version, m.occurred_ms) > (seen.version, seen.occurred_ms):
            latest[m.account_id] = m
    accounts = [_snapshot_row(latest[a], now) for a in sorted(latest)]
    unique = {m.event_id: m for m in reversed(movements)}  # the first of any duplicate wins
    ledger = [_ledger_row(unique[e], now) for e in sorted(unique)]

    connection = session.connection()
    if connection.dialect.name == "postgresql":
        inserted = _apply_postgresql(connection, accounts, ledger)
    elif connection.dialect.name == "sqlite":
        inserted = _apply_sqlite(connection, accounts, ledger)
    else:
        raise StoreError(f"unsupported database dialect {connection.dialect.name!r}")
    rollup = usage_daily.additions(connection, [unique[e] for e in sorted(inserted)])
    if rollup and connection.dialect.name == "postgresql":
        connection.execute(_PG_ADD_USAGE, _columns(USAGE_DAILY, rollup))
    elif rollup:
        connection.execute(_SQLITE_ADD_USAGE, rollup)
    return len(inserted)


def _apply_postgresql(
    connection: Connection, accounts: list[dict[str, Any]], ledger: list[dict[str, Any]]
) -> set[str]:
    connection.execute(_PG_UPSERT_ACCOUNTS, _columns(ACCOUNTS, accounts))
    return set(connection.execute(_PG_INSERT_LEDGER, _columns(LEDGER, ledger)).scalars())


def _apply_sqlite(
    connection: Connection, accounts: list[dict[str, Any]], ledger: list[dict[str, Any]]
) -> set[str]:
    upsert = sqlite.insert(ACCOUNTS)
    upsert = upsert.on_conflict_do_update(
        index_elements=[ACCOUNTS.c.id],
        set_={name: upsert.excluded[name] for name in SNAPSHOT_COLUMNS},
        where=ACCOUNTS.c.version < upsert.excluded.version,
    )
    connection.execute(upsert, accounts)
    insert = sqlite.insert(LEDGER).on_conflict_do_nothing().returning(LEDGER.c.event_id)
    # executemany + RETURNING: the compiled statement is cached and sent in multi-row pages.
    return set(connection.execute(insert, ledger).scalars())


def _columns(table: Table, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {c.name: [row[c.name] for row in rows] for c in table.columns}


def _unnest_insert(table: Table, conflict: str) -> TextClause:
    """``INSERT INTO t (cols) SELECT * FROM unnest(CAST(:col AS type[]), ...) <conflict>``."""
    names = [c.name for c in table.columns]
    arrays = ", ".join(f"CAST(:{c.name} AS {_array_type(c)})" for c in table.columns)
    return text(
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays}) {conflict}"
    )


def _array_type(column: Column[Any]) -> str:
    # No length on VARCHAR: an explicit cast would truncate, the column's own check errors.
    # sqlmodel's AutoString is a TypeDecorator over String: look at its impl too.
    candidates = (column.type, getattr(column.type, "impl", None))
    for kind, sql in _PG_ARRAYS:
        if any(isinstance(t, kind) for t in candidates):
            return sql
    raise TypeError(f"no PostgreSQL array type for {column}")


_PG_ARRAYS: tuple[tuple[type[Any], str], ...] = (
    (UTCDateTime, "TIMESTAMPTZ[]"),
    (Date, "DATE[]"),
    (BigInteger, "BIGINT[]"),
    (Boolean, "BOOLEAN[]"),
    (String, "VARCHAR[]"),
)

_PG_UPSERT_ACCOUNTS = _unnest_insert(
    ACCOUNTS,
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name in SNAPSHOT_COLUMNS)
    + " WHERE accounts.version < EXCLUDED.version",
)
_PG_INSERT_LEDGER = _unnest_insert(LEDGER, "ON CONFLICT (event_id) DO NOTHING RETURNING event_id")
_PG_ADD_USAGE = _unnest_insert(
    USAGE_DAILY,
    "ON CONFLICT (day, account_id, route, key_id) DO UPDATE SET "
    + ", ".join(f"{name} = usage_daily.{name} + EXCLUDED.{name}" for name in usage_daily.SUMS),
)
_sqlite_usage = sqlite.insert(USAGE_DAILY)
_SQLITE_ADD_USAGE = _sqlite_usage.on_conflict_do_update(
    index_elements=list(USAGE_DAILY.primary_key),
    set_={name: USAGE_DAILY.c[name] + _sqlite_usage.excluded[name] for name in usage_daily.SUMS},
)


def _snapshot_row(m: Movement, now: datetime) -> dict[str, Any]:
    return {
        "id": m.account_id,
        "email": None,
        **snapshots.columns_of(m),
        "created_at": now,
        "updated_at": now,
    }


def _ledger_row(m: Movement, now: datetime) -> dict[str, Any]:
    return {
        "event_id": m.event_id,
        "account_id": m.account_id,
        "kind": m.kind,
        "plan_delta": m.plan_delta,
        "bonus_delta": m.bonus_delta,
        "credits_delta": m.credits_delta,
        "tokens": m.tokens,
        "held_plan": m.held_plan,
        "held_bonus": m.held_bonus,
        "request_id": m.request_id or None,
        "reason": m.reason or None,
        "occurred_at": to_datetime(m.occurred_ms),
        "version": m.version,
        "recorded_at": now,
        "route": m.route or None,
        "key_id": m.key_id or None,
    }
