"""PostgreSQL unreachable for a while during traffic: the worker retries, catches up, loses
nothing. The outage is a TCP forwarder between the worker and the shared PostgreSQL, cut and
restored; the server itself keeps running for everyone else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from gateway.services import Services
from sync.metrics import registry_of
from sync.worker import SyncWorker
from tests.support.forwarder import Forwarder
from tests.support.processes import ACCOUNTS, Traffic, open_accounts
from tests.support.scrapes import text_of, total
from tests.support.stores import fresh_store
from tests.support.storeview import StoreView, assert_in_sync, store_services


async def until(condition: Callable[[], Awaitable[bool]], *, within: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def forwarder(pg_url: str) -> AsyncIterator[Forwarder]:
    target = make_url(pg_url)
    running = Forwarder(target.host or "127.0.0.1", target.port or 5432)
    await running.start()
    yield running
    await running.close()


@pytest.fixture
async def through_forwarder(
    real_redis: aioredis.Redis, redis_url: str, pg_url: str, tmp_path: Path, forwarder: Forwarder
) -> AsyncIterator[Services]:
    """Services whose store is the test PostgreSQL reached through the forwarder."""
    url = make_url(fresh_store("postgresql", tmp_path, pg_url)).set(port=forwarder.port)
    async with store_services(redis_url, url.render_as_string(hide_password=False)) as built:
        yield built


async def test_database_outage_during_traffic_loses_nothing(
    through_forwarder: Services, forwarder: Forwarder, traffic: Traffic, tmp_path: Path
) -> None:
    services = through_forwarder
    await open_accounts(services, ACCOUNTS)
    running = tmp_path / "traffic-running"
    running.touch()
    await traffic.start(7, 0, ACCOUNTS, "--until-gone", str(running))
    worker = SyncWorker(services, batch_size=20)
    loop = asyncio.create_task(worker.run())
    try:
        await until(lambda: _applied_more_than(worker, len(ACCOUNTS)))
        await forwarder.cut()
        # Five failed passes in a row: with the growing pause, about three seconds down.
        await until(lambda: _failed_passes(worker, 5))
        applied_during_outage = worker.stats.applied
        # the events waiting since the cut, about three seconds: in seconds, not ms
        assert 0 < total(text_of(registry_of(worker.stats)), "creditgate_sync_lag_seconds") < 60
        await forwarder.restore()
        await until(lambda: _applied_more_than(worker, applied_during_outage))
        running.unlink()
        (counts,) = await traffic.wait()
        assert sum(counts.values()) > 0
        await until(lambda: _drained(services))
    finally:
        worker.should_exit = True
        await asyncio.wait_for(loop, timeout=60)

    assert worker.failures == 0
    await assert_in_sync(services, StoreView(services))
    text = text_of(registry_of(worker.stats))
    assert total(text, "creditgate_sync_errors_total") >= 5
    assert total(text, "creditgate_sync_events_applied_total") == worker.stats.applied > 0


async def _applied_more_than(worker: SyncWorker, n: int) -> bool:
    return worker.stats.applied > n


async def _failed_passes(worker: SyncWorker, n: int) -> bool:
    return worker.failures >= n


async def _drained(services: Services) -> bool:
    return await SyncWorker(services).reader.lag_ms() == 0
