"""Reading the store of record from async tests."""

from __future__ import annotations

import asyncio

from gateway.services import Services
from store import repository
from store.database import session
from store.records import AccountRecord, LedgerRecord
from sync.audit import audit


class StoreView:
    """Read the store in tests, from async code."""

    def __init__(self, services: Services) -> None:
        self.db = services.db

    async def accounts(self) -> dict[str, AccountRecord]:
        def read() -> dict[str, AccountRecord]:
            with session(self.db) as s:
                ids = repository.all_account_ids(s)
                found = {a: repository.get_account(s, account_id=a) for a in ids}
                return {a: r for a, r in found.items() if r is not None}

        return await asyncio.to_thread(read)

    async def ledger(self, account_id: str) -> list[LedgerRecord]:
        def read() -> list[LedgerRecord]:
            with session(self.db) as s:
                return repository.ledger_page(s, account_id=account_id, limit=100_000)

        return await asyncio.to_thread(read)

    async def totals(self) -> dict[str, tuple[int, int]]:
        def read() -> dict[str, tuple[int, int]]:
            with session(self.db) as s:
                return repository.ledger_totals(s)

        return await asyncio.to_thread(read)


async def assert_in_sync(services: Services, view: StoreView) -> dict[str, AccountRecord]:
    """Store == Redis for every account, and each account's ledger holds every event once.

    An account's events carry versions 1, 2, ... (one per event), so its ledger must hold
    exactly the versions 1..v of its snapshot, with distinct event ids.
    """
    report = await audit(services)
    assert report.differences == []
    assert report.absent_in_redis == []
    assert report.unsynced_events == 0
    accounts = await view.accounts()
    assert accounts
    for account, record in accounts.items():
        ledger = await view.ledger(account)
        assert sorted(e.version for e in ledger) == list(range(1, record.version + 1)), account
        assert len({e.event_id for e in ledger}) == len(ledger)
    return accounts
