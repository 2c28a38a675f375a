"""An account snapshot <-> the accounts table's columns: written once, for the repository's
reads and the sync's writes.

Every field of ``AccountSnapshot`` is a column of the same name, but for the two times: the
snapshot holds them in milliseconds since the epoch (the engine's unit), the table as
datetimes, in ``subscription_ends_at`` (NULL: no end) and ``period_end``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from store.models import Account
from store.records import AccountSnapshot
from store.timefmt import to_datetime, to_ms

_TIMES = {"subscription_ends_ms": "subscription_ends_at", "period_end_ms": "period_end"}
_SAME_NAMED = tuple(f.name for f in fields(AccountSnapshot) if f.name not in _TIMES)

COLUMNS: tuple[str, ...] = tuple(_TIMES.get(f.name, f.name) for f in fields(AccountSnapshot))
"""The accounts table's columns that hold a snapshot."""


def columns_of(snapshot: AccountSnapshot) -> dict[str, Any]:
    """The values of ``COLUMNS`` for a snapshot."""
    values = {name: getattr(snapshot, name) for name in _SAME_NAMED}
    ends = snapshot.subscription_ends_ms
    # The engine writes 0 for "no subscription end"; the store says None.
    values["subscription_ends_at"] = to_datetime(ends) if ends else None
    values["period_end"] = to_datetime(snapshot.period_end_ms)
    return values


def snapshot_fields(row: Account) -> dict[str, Any]:
    """The fields of the snapshot an accounts row holds, by name."""
    values = {name: getattr(row, name) for name in _SAME_NAMED}
    ends = row.subscription_ends_at
    values["subscription_ends_ms"] = None if ends is None else to_ms(ends)
    values["period_end_ms"] = to_ms(row.period_end)
    return values
