"""Restore from the store of record: Redis lost the account, the store brings it back once."""

from __future__ import annotations

import asyncio

from gateway.accounts.restore import restore_from_store
from gateway.credits import keys
from gateway.credits.outboxes import event_fields
from gateway.services import Services
from sync.worker import SyncWorker
from tests.support.storeview import StoreView


async def test_unknown_account_is_none(services: Services) -> None:
    assert await restore_from_store(services, "nobody") is None
    assert not await services.redis.exists(keys.account_keys("nobody").state)


async def test_flushed_account_comes_back_as_synced(
    services: Services, store_view: StoreView
) -> None:
    engine = services.credits
    await engine.open("acct-r", tier="pro", months=1)
    await engine.grant("acct-r", 7, reason="welcome")
    held = await engine.reserve("acct-r", "req-1", 3)
    assert held.held
    settled = await engine.settle("acct-r", "req-1", 4321)
    assert settled.account is not None
    before = settled.account
    assert await SyncWorker(services).run_once() == 3  # open, grant, the charge

    await services.redis.flushdb()
    assert await engine.status("acct-r") is None
    state = await restore_from_store(services, "acct-r")

    assert state is not None
    assert (state.plan_credits, state.bonus_credits, state.tier) == (97, 7, "pro")
    assert (state.total_tokens, state.monthly_tokens) == (4321, 4321)
    assert state.subscribed and state.subscription_ends_ms == before.subscription_ends_ms
    assert state.period_end_ms == before.period_end_ms
    assert state.version > before.version  # the restore is an event of its own

    assert (await engine.reserve("acct-r", "req-2", 1)).held
    await engine.settle("acct-r", "req-2", 10)
    await SyncWorker(services).run_once()
    record = (await store_view.accounts())["acct-r"]
    assert (record.plan_credits, record.total_tokens) == (96, 4331)
    assert record.version > state.version
    kinds = [e.kind for e in reversed(await store_view.ledger("acct-r"))]
    assert kinds == ["open", "grant", "charge", "restore", "charge"]


async def test_racing_replicas_restore_once(services: Services) -> None:
    await services.credits.open("acct-race", tier="free")
    await SyncWorker(services).run_once()
    await services.redis.flushdb()

    states = await asyncio.gather(*(restore_from_store(services, "acct-race") for _ in range(40)))

    assert len({(s.plan_credits, s.version) for s in states if s is not None}) == 1
    stream = keys.outbox(keys.bucket_of("acct-race"))
    events = await services.redis.xrange(stream)
    assert [event_fields(fields)["kind"] for _, fields in events] == ["restore"]
