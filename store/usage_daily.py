"""The daily roll-up of usage (table ``usage_daily``): kept here, in the transaction that
inserts the ledger rows it sums; read by ``store.history`` for the operators' queries across
accounts, which would otherwise scan every account's ledger.

A roll-up row sums the usage movements (``USAGE_KINDS``) of one UTC day, account, route and
key the way ``store.history`` sums the ledger: credits charged (taken by holds and charges,
less what refunds gave back), credits refunded, tokens and requests.

Requests: the ledger query counts distinct request ids, which do not add up. A movement adds
one request to its roll-up row unless that row already counts a movement of the same request,
so each row's requests equal the ledger's distinct request ids of its day, account, route and
key. A request settled since revision 0002 has exactly one usage movement, its ``charge`` or
``refund``, which says what it held (``held_plan + held_bonus > 0``): it adds one with no
look-up. A movement that held nothing (the ``hold`` / ``charge`` / ``refund`` rows of older
ledgers, a request that held 0 credits) looks for an earlier movement of its request on its
day in its account (the ledger's account-and-time index). A request's movements share its
account, route and key; only an older request whose hold and settle straddle midnight counts
on both days, exactly as the ledger query by day counts it, and once in a range of days.

The audit checks the roll-up against the ledger (``rollup_mismatches``).

Exactly once: ``store.movements`` asks ``additions`` about only the movements its ledger
insert wrote (its RETURNING) and adds them with one ``INSERT .. ON CONFLICT DO UPDATE`` per
batch, in the same transaction, rows in key order so concurrent batches wait on each other
instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, distinct, func, select
from sqlmodel import Session

from store.database import boundary
from store.history import USAGE_KINDS, ledger_day
from store.models import LEDGER, USAGE_DAILY
from store.records import Movement
from store.timefmt import to_datetime

Cell = tuple[date, str, str, str]
"""A roll-up row's key: UTC day, account id, route, key id ('' for none)."""

SETTLE_KINDS = ("charge", "refund")
SUMS = ("requests", "credits_charged", "credits_refunded", "tokens")
"""The roll-up's figures: an upsert adds them to the row's."""


def additions(connection: Connection, movements: Sequence[Movement]) -> list[dict[str, Any]]:
    """What ``movements`` (newly inserted in the ledger, in this transaction) add to the
    roll-up: one row per roll-up key, in key order, for ``store.movements`` to add."""
    usage = sorted(
        (m for m in movements if m.kind in USAGE_KINDS),
        key=lambda m: (m.occurred_ms, m.version, m.event_id),
    )
    if not usage:
        return []
    seen = _counted_before(connection, usage)
    sums: dict[Cell, list[int]] = {}
    for m in usage:
        cell = _cell_of(m)
        row = sums.setdefault(cell, [0, 0, 0, 0])
        if m.request_id and (cell, m.request_id) not in seen:
            seen.add((cell, m.request_id))
            row[0] += 1
        refunded = m.credits_delta if m.kind == "refund" else 0
        taken = -m.credits_delta if m.kind != "refund" and m.credits_delta < 0 else 0
        row[1] += taken - refunded
        row[2] += refunded
        row[3] += m.tokens
    return [
        {
            "day": cell[0],
            "account_id": cell[1],
            "route": cell[2],
            "key_id": cell[3],
            "requests": s[0],
            "credits_charged": s[1],
            "credits_refunded": s[2],
            "tokens": s[3],
        }
        for cell, s in sorted(sums.items())
    ]


def _cell_of(m: Movement) -> Cell:
    return (to_datetime(m.occurred_ms).date(), m.account_id, m.route or "", m.key_id or "")


def _sole_movement(m: Movement) -> bool:
    """A request settled since 0002 has one usage movement, the one that says what it held."""
    return m.kind in SETTLE_KINDS and m.held_plan + m.held_bonus > 0


def _counted_before(connection: Connection, usage: Sequence[Movement]) -> set[tuple[Cell, str]]:
    """The (row, request) pairs the roll-up counts already, for the movements that may not be
    their request's first in their row."""
    ask = [m for m in usage if m.request_id and not _sole_movement(m)]
    if not ask:
        return set()
    new = {m.event_id for m in usage}
    days = [to_datetime(m.occurred_ms).date() for m in ask]
    c = LEDGER.c
    stmt = select(c.event_id, c.account_id, c.request_id, c.route, c.key_id, c.occurred_at).where(
        c.account_id.in_(sorted({m.account_id for m in ask})),
        c.occurred_at >= _midnight(min(days)),
        c.occurred_at < _midnight(max(days) + timedelta(days=1)),
        c.request_id.in_(sorted({m.request_id for m in ask if m.request_id})),
        c.kind.in_(USAGE_KINDS),
    )
    return {
        (
            (row.occurred_at.date(), row.account_id, row.route or "", row.key_id or ""),
            row.request_id,
        )
        for row in connection.execute(stmt)
        if row.event_id not in new
    }


def _midnight(day: date) -> datetime:
    return to_datetime(0) + (day - date(1970, 1, 1))


@dataclass(frozen=True, slots=True)
class RollupMismatch:
    """A roll-up row that differs from the ledger's sums of its movements (zeros: none)."""

    day: date
    account_id: str
    route: str | None
    key_id: str | None
    ledger: tuple[int, int, int, int]
    """requests, credits charged, credits refunded, tokens, summed from the ledger."""
    rollup: tuple[int, int, int, int]


@boundary
def rollup_mismatches(session: Session) -> list[RollupMismatch]:
    """Every roll-up row that is not the ledger's sums of its day, account, route and key
    (one pass over each table, for the audit), in key order."""
    c, u = LEDGER.c, USAGE_DAILY.c
    day = ledger_day(session.connection().dialect.name)
    route, key_id = func.coalesce(c.route, ""), func.coalesce(c.key_id, "")
    refunded = func.sum(case((c.kind == "refund", c.credits_delta), else_=0))
    taken = func.sum(
        case((and_(c.kind != "refund", c.credits_delta < 0), -c.credits_delta), else_=0)
    )
    ledger_sums = (
        select(
            day,
            c.account_id,
            route,
            key_id,
            func.count(distinct(c.request_id)),
            taken - refunded,
            refunded,
            func.sum(c.tokens),
        )  # fmt: skip
        .where(c.kind.in_(USAGE_KINDS))
        .group_by(day, c.account_id, route, key_id)
    )
    rollup_sums = select(
        u.day, u.account_id, u.route, u.key_id,
        u.requests, u.credits_charged, u.credits_refunded, u.tokens,
    )  # fmt: skip
    ledger = {_cell_key(row[:4]): _figures(row[4:]) for row in session.execute(ledger_sums)}
    rollup = {_cell_key(row[:4]): _figures(row[4:]) for row in session.execute(rollup_sums)}
    none = (0, 0, 0, 0)
    return [
        RollupMismatch(
            cell[0],
            cell[1],
            cell[2] or None,
            cell[3] or None,
            ledger.get(cell, none),
            rollup.get(cell, none),
        )  # fmt: skip
        for cell in sorted(set(ledger) | set(rollup))
        if ledger.get(cell, none) != rollup.get(cell, none)
    ]


def _cell_key(values: Sequence[Any]) -> Cell:
    day = values[0] if isinstance(values[0], date) else date.fromisoformat(str(values[0]))
    return (day, str(values[1]), str(values[2]), str(values[3]))


def _figures(values: Sequence[Any]) -> tuple[int, int, int, int]:
    return (int(values[0]), int(values[1]), int(values[2]), int(values[3]))
