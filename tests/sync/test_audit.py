"""The audit names every disagreement between Redis, the store's snapshot and the ledger."""

from __future__ import annotations

import asyncio
from dataclasses import fields

from sqlalchemy import text

from gateway.credits import keys
from gateway.credits.results import Snapshot
from gateway.services import Services
from store.database import session
from store.records import AccountSnapshot
from sync.audit import audit, render
from sync.worker import SyncWorker


async def seeded(services: Services) -> None:
    for account in ("aud-1", "aud-2", "aud-3"):
        await services.credits.open(account, tier="pro", months=1)
        await services.credits.grant(account, 3, reason="seed")
    await SyncWorker(services).run_once()


def execute(services: Services, sql: str, **params: object) -> None:
    with session(services.db) as db:
        db.connection().execute(text(sql), params)


def test_redis_and_the_store_name_the_same_account_fields() -> None:
    """The layers may not share one definition: restore, the outbox and the audit carry the
    fields across by name, so both sides' lists must agree, in name, order and type."""
    redis = [(f.name, f.type) for f in fields(Snapshot)]
    assert redis == [(f.name, f.type) for f in fields(AccountSnapshot)]


async def test_clean_after_a_pass(services: Services) -> None:
    await seeded(services)
    report = await audit(services)
    assert report.clean and report.accounts == 3
    assert render(report)[-1] == "audited 3 account(s): clean"


async def test_each_kind_of_difference_is_reported(services: Services) -> None:
    await seeded(services)
    await services.redis.hset(keys.account_keys("aud-1").state, "tier", "enterprise")
    await asyncio.to_thread(
        execute, services, "UPDATE accounts SET total_tokens = 9 WHERE id = 'aud-2'"
    )
    await asyncio.to_thread(
        execute,
        services,
        "DELETE FROM ledger_entries WHERE account_id = 'aud-3' AND kind = 'grant'",
    )
    await services.credits.open("aud-4")  # in Redis, never synced

    report = await audit(services)

    found = {(d.account, d.what, d.left, d.right) for d in report.differences}
    assert found == {
        ("aud-1", "tier", "redis", "store"),
        ("aud-2", "total_tokens", "redis", "store"),
        ("aud-3", "bonus_credits", "ledger", "store"),
        ("aud-4", "account", "redis", "store"),
    }
    assert report.unsynced_events == 1
    assert "aud-3: bonus_credits: ledger=0 store=3" in render(report)


async def test_an_account_redis_lost_is_listed_not_a_difference(services: Services) -> None:
    await seeded(services)
    await services.redis.delete(keys.account_keys("aud-2").state)

    report = await audit(services)

    assert report.clean
    assert report.absent_in_redis == ["aud-2"]
