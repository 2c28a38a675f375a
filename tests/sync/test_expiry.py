"""The expiry sweep downgrades ended subscriptions nobody touched, once, on both stores."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.accounts.operations import change_tier, create_account
from gateway.credits import keys
from gateway.credits.engine import PERIOD_MS as MONTH_MS
from gateway.services import Services
from store import repository
from store.database import session
from store.records import AccountRecord
from sync.expiry import sweep_expired
from sync.worker import SyncWorker
from tests.support.clocks import ManualClock
from tests.support.storeview import store_services

DAY_MS = 86_400_000


@pytest.fixture
def clock() -> ManualClock:
    """The scripts' clock, starting at this host's now so the store's estimates agree."""
    return ManualClock(int(time.time() * 1000))


@pytest.fixture
async def timed(
    real_redis: aioredis.Redis, redis_url: str, store_url: str, clock: ManualClock
) -> AsyncIterator[Services]:
    async with store_services(redis_url, store_url, clock=clock) as built:
        yield built


def stored(services: Services, account_id: str) -> AccountRecord:
    with session(services.db) as s:
        record = repository.get_account(s, account_id=account_id)
    assert record is not None
    return record


async def test_sweep_downgrades_only_ended_subscriptions(
    timed: Services, clock: ManualClock
) -> None:
    worker = SyncWorker(timed)
    await create_account(timed, account_id="ended", tier="pro", months=1)
    await create_account(timed, account_id="running", tier="pro", months=3)
    await create_account(timed, account_id="free")
    await worker.sync()

    clock.advance(MONTH_MS + DAY_MS)
    assert await sweep_expired(timed) == 1

    ended = await timed.credits.status("ended")
    assert ended is not None and not ended.subscribed and ended.tier == "free"
    assert ended.plan_credits == 5
    running = await timed.credits.status("running")
    assert running is not None and running.subscribed and running.tier == "pro"

    await worker.sync()
    assert not stored(timed, "ended").subscribed
    assert stored(timed, "running").subscribed
    assert await sweep_expired(timed) == 0


async def test_a_renewal_redis_has_and_the_store_not_yet_is_kept(
    timed: Services, clock: ManualClock
) -> None:
    worker = SyncWorker(timed)
    await create_account(timed, account_id="renewed", tier="pro", months=1)
    await worker.sync()
    await change_tier(timed, "renewed", "renew", months=2)  # not synced: the store is stale
    clock.advance(MONTH_MS + DAY_MS)
    assert await sweep_expired(timed) == 0
    state = await timed.credits.status("renewed")
    assert state is not None and state.subscribed


async def test_an_account_redis_lost_is_restored_then_downgraded(
    timed: Services, clock: ManualClock
) -> None:
    await create_account(timed, account_id="lost", tier="enterprise", months=1)
    await SyncWorker(timed).sync()
    await timed.redis.delete(keys.account_keys("lost").state)
    clock.advance(2 * MONTH_MS)
    assert await sweep_expired(timed) == 1
    state = await timed.credits.status("lost")
    assert state is not None and state.tier == "free"


async def test_the_sync_worker_runs_the_sweep_each_pass(
    timed: Services, clock: ManualClock
) -> None:
    worker = SyncWorker(timed)
    await create_account(timed, account_id="ended", tier="pro", months=1)
    await worker.run_once()
    clock.advance(MONTH_MS + 1)
    await worker.run_once()
    assert worker.stats.expired == 1
    await worker.run_once()
    assert not stored(timed, "ended").subscribed
    assert worker.stats.expired == 1
