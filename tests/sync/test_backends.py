"""The same sync pass on the other Redis shapes: a 3-master Redis Cluster (every outbox
command names one stream, so one slot) and the embedded fakeredis of ``creditgate demo``."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.credits import keys
from gateway.services import Services, open_services
from sync.worker import SyncWorker
from tests.support.stores import fresh_store
from tests.support.storeview import StoreView, assert_in_sync, make_settings

ACCOUNTS = [f"spread-{i}" for i in range(40)]  # lands in many buckets, so on every master


@pytest.fixture
def sqlite_url(tmp_path: Path, pg_url: str) -> str:
    return fresh_store("sqlite", tmp_path, pg_url)


async def test_one_pass_on_a_redis_cluster(cluster_redis: RedisCluster, sqlite_url: str) -> None:
    services = open_services(make_settings("redis://unused", sqlite_url), redis=cluster_redis)
    try:
        await one_pass(services)
    finally:
        services.db.dispose()


async def test_one_pass_on_the_embedded_redis(sqlite_url: str) -> None:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    services = open_services(make_settings("redis://unused", sqlite_url), redis=client)
    try:
        await one_pass(services)
    finally:
        await services.close()


async def one_pass(services: Services) -> None:
    engine = services.credits
    for n, account in enumerate(ACCOUNTS):
        await engine.open(account, tier="pro", months=1)
        assert (await engine.reserve(account, f"r{n}", 2)).held
        await (engine.settle if n % 2 else engine.refund)(account, f"r{n}", **_how(n))
    assert len({keys.bucket_of(a) for a in ACCOUNTS}) > 20

    worker = SyncWorker(services, batch_size=1)
    assert await worker.run_once() == 2 * len(ACCOUNTS)  # open, then the request's one event
    await assert_in_sync(services, StoreView(services))
    assert await worker.run_once() == 0


def _how(n: int) -> dict[str, object]:
    return {"tokens": 10 * n} if n % 2 else {"reason": "upstream failed"}
