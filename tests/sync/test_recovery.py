"""Recovery: open reservations of a dead gateway reaped once; a flushed Redis restored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.accounts.restore import restore_from_store
from gateway.credits import keys
from gateway.services import Services
from sync.worker import SyncWorker
from tests.support.clocks import ManualClock
from tests.support.processes import ACCOUNTS, Traffic, burst
from tests.support.storeview import StoreView, assert_in_sync, store_services

HOLD_MS = 2_000


@pytest.fixture
async def clocked(
    real_redis: aioredis.Redis, redis_url: str, store_url: str, clock: ManualClock
) -> AsyncIterator[Services]:
    """Services whose scripts run on a ManualClock, with reservations held for 2 s."""
    async with store_services(
        redis_url, store_url, clock=clock, upstream_timeout=1.0, reservation_grace=1.0
    ) as built:
        assert built.credits.hold_ms == HOLD_MS
        yield built


async def test_a_hold_whose_account_redis_lost_is_refunded_after_a_restore(
    clocked: Services, clock: ManualClock
) -> None:
    """Redis lost the account (an eviction) while a dead gateway's hold was open: the store
    counts the held credits as the account's, the restore takes them out again, and the
    reaper's refund gives them back once."""
    engine = clocked.credits
    await engine.open("lost", tier="pro", months=1)
    assert (await engine.reserve("lost", "r1", 3)).held
    worker = SyncWorker(clocked)
    await worker.run_once()
    await clocked.redis.delete(keys.account_keys("lost").state)
    assert (await engine.settle("lost", "r1", 10)).status == "missing"
    assert (await engine.refund("lost", "r1", reason="x")).status == "missing"

    clock.advance(HOLD_MS + 1)
    await worker.run_once()

    assert worker.stats.reaped == 1
    state = await engine.status("lost")
    assert state is not None and state.plan_credits == 100
    await worker.run_once()
    await assert_in_sync(clocked, StoreView(clocked))


async def test_reaper_refunds_a_dead_gateways_reservations_once(
    clocked: Services, clock: ManualClock
) -> None:
    engine = clocked.credits
    for account in ("a", "b", "c"):
        await engine.open(account, tier="pro", months=1)
        for n in range(3):
            assert (await engine.reserve(account, f"{account}-{n}", 2)).held
    await engine.settle("a", "a-0", 50)  # answered before the gateway died
    await engine.refund("b", "b-0", reason="upstream failed")

    first, second = SyncWorker(clocked), SyncWorker(clocked)
    await asyncio.gather(first.run_once(), second.run_once())
    assert first.stats.reaped + second.stats.reaped == 0  # not due yet

    clock.advance(HOLD_MS + 1)
    await asyncio.gather(first.run_once(), second.run_once())

    assert first.stats.reaped + second.stats.reaped == 7
    late = await engine.settle("c", "c-1", 10)  # the dead gateway's answer, too late
    assert late.status == "refunded_before"
    for account, plan in (("a", 98), ("b", 100), ("c", 100)):
        state = await engine.status(account)
        assert state is not None and state.plan_credits == plan
    await first.run_once()
    assert first.stats.reaped + second.stats.reaped == 7
    view = StoreView(clocked)
    await assert_in_sync(clocked, view)
    expired = [e for a in "abc" for e in await view.ledger(a) if e.reason == "expired"]
    assert sorted(e.request_id or "" for e in expired) == [
        "a-1",
        "a-2",
        "b-1",
        "b-2",
        "c-0",
        "c-1",
        "c-2",
    ]
    # one row per request: what it held, nothing lost (the refund gave it all back)
    assert all(e.kind == "refund" and (e.held_credits, e.credits_delta) == (2, 0) for e in expired)


async def test_flushed_redis_restores_on_touch_and_charging_resumes(
    services: Services, store_view: StoreView, traffic: Traffic
) -> None:
    await burst(services, traffic, processes=2, ops=80)
    worker = SyncWorker(services)
    await worker.run_once()
    synced = await assert_in_sync(services, store_view)

    await services.redis.flushdb()
    engine = services.credits
    for n, account in enumerate(ACCOUNTS):
        held = await engine.reserve(account, f"after-{n}", 1)
        if held.status == "missing":
            assert await restore_from_store(services, account) is not None
            held = await engine.reserve(account, f"after-{n}", 1)
        before = synced[account]
        if before.credits_remaining == 0:
            assert held.status == "insufficient"
            continue
        assert held.held and held.account is not None
        assert held.account.credits_remaining == before.credits_remaining - 1
        settled = await engine.settle(account, f"after-{n}", 7)
        assert settled.account is not None
        assert settled.account.total_tokens == before.total_tokens + 7

    await worker.run_once()
    after = await assert_in_sync(services, store_view)
    assert all(after[a].version > synced[a].version for a in ACCOUNTS)
