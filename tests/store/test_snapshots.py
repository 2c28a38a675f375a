"""An account snapshot and the accounts table's columns: same names but for the two times."""

from __future__ import annotations

from dataclasses import fields

from store import snapshots
from store.models import ACCOUNTS, Account
from store.records import AccountSnapshot
from store.timefmt import to_datetime
from tests.support.samples import PERIOD_END, make_movement


def test_every_snapshot_column_is_a_column_of_the_accounts_table() -> None:
    assert set(snapshots.COLUMNS) <= {c.name for c in ACCOUNTS.columns}
    assert len(snapshots.COLUMNS) == len(fields(AccountSnapshot))


def test_a_snapshot_goes_into_a_row_and_back() -> None:
    movement = make_movement("acct", 3, bonus_credits=4)
    columns = snapshots.columns_of(movement)
    assert set(columns) == set(snapshots.COLUMNS)
    assert columns["period_end"] == to_datetime(PERIOD_END)
    assert columns["subscription_ends_at"] == to_datetime(PERIOD_END)
    back = AccountSnapshot(**snapshots.snapshot_fields(Account(id="acct", **columns)))
    expected = {f.name: getattr(movement, f.name) for f in fields(AccountSnapshot)}
    assert back == AccountSnapshot(**expected)


def test_no_subscription_end_is_null_in_the_table() -> None:
    for ends in (None, 0):
        columns = snapshots.columns_of(make_movement("acct", 1, subscription_ends_ms=ends))
        assert columns["subscription_ends_at"] is None
        assert (
            snapshots.snapshot_fields(Account(id="acct", **columns))["subscription_ends_ms"] is None
        )
