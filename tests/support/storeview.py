"""The store of record in tests: a fresh one per test, read from async code, checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.credits.engine import Clock
from gateway.services import Services, open_services
from gateway.settings import Settings
from store import repository
from store.database import session
from store.records import AccountRecord, LedgerRecord
from sync.audit import audit, compare, redis_states, redis_view
from sync.checks import stream_order


def make_settings(redis_url: str, store_url: str, **overrides: Any) -> Settings:
    return Settings.load(
        redis_url=redis_url, database_url=store_url, sync_interval=0.05, **overrides
    )


@asynccontextmanager
async def store_services(
    redis_url: str, store_url: str, *, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[Services]:
    """Services on the test Redis and a store of record (``make_settings``), closed on exit;
    ``clock`` (default Redis's own) runs the scripts."""
    built = open_services(make_settings(redis_url, store_url, **overrides), clock=clock)
    try:
        yield built
    finally:
        await built.close()


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


def assert_versions(ledger: list[LedgerRecord], record: AccountRecord) -> None:
    """Versions strictly increase in the order the events were appended, end at the snapshot's,
    and no event id repeats."""
    ordered = sorted(ledger, key=lambda e: stream_order(e.event_id))
    versions = [e.version for e in ordered]
    assert versions == sorted(set(versions)), record.account_id
    assert versions[-1] == record.version, record.account_id
    assert len({e.event_id for e in ledger}) == len(ledger)


async def ledger_size(view: StoreView, accounts: list[str] | dict[str, Any]) -> int:
    """The ledger rows of these accounts: one per event synced."""
    return sum([len(await view.ledger(account)) for account in accounts])


async def assert_in_sync(services: Services, view: StoreView) -> dict[str, AccountRecord]:
    """Store == Redis for every account, and each account's ledger holds every event once.

    An account's events carry strictly increasing versions (``max(v + 1, now in us)``), so
    its ledger, in stream order, must hold increasing versions ending at its snapshot's, with
    distinct event ids.
    """
    report = await audit(services)
    assert report.differences == []
    assert report.findings == []
    assert report.absent_in_redis == []
    assert report.unsynced_events == 0
    accounts = await view.accounts()
    assert accounts
    for account, record in accounts.items():
        assert_versions(await view.ledger(account), record)
    return accounts


async def assert_accounts_in_sync(
    services: Services, view: StoreView, accounts: list[str]
) -> dict[str, AccountRecord]:
    """``assert_in_sync`` for some accounts only (others may share the Redis and store)."""
    records = await view.accounts()
    totals = await view.totals()
    states = await redis_states(services.redis, accounts)
    for account, state in zip(accounts, states, strict=True):
        record = records.get(account)
        assert record is not None, account
        assert compare(account, redis_view(state), record, totals.get(account)) == []
        assert_versions(await view.ledger(account), record)
    return {a: records[a] for a in accounts}
