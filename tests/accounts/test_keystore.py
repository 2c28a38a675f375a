"""The key cache's store side: a key looked up and its last use written in the store of record,
on the driver itself (``store.direct``) or through the engine, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from gateway.accounts.apikeys import hash_key
from gateway.accounts.keycache import KeyEntry, store_lookup, store_toucher
from gateway.accounts.operations import create_account, list_keys, revoke_key
from gateway.services import Services, open_services
from gateway.settings import Settings


@pytest.fixture(params=["direct", "engine"])
async def services(
    request: pytest.FixtureRequest, redis_url: str, store_url: str, real_redis: aioredis.Redis
) -> AsyncIterator[Services]:
    built = open_services(Settings.load(redis_url=redis_url, database_url=store_url))
    assert built.direct is not None  # a file or a server: the driver takes it
    if request.param == "engine":
        built.direct = None
    yield built
    await built.close()


async def test_a_key_is_found_touched_and_seen_revoked(services: Services) -> None:
    created = await create_account(services, reason="test")
    lookup, touch = store_lookup(services), store_toucher(services)
    key_hash = hash_key(created.api_key)
    assert await lookup(key_hash) == KeyEntry(created.account_id, created.key_id, revoked=False)
    assert await lookup(hash_key(created.api_key + "x")) is None
    used = datetime(2026, 11, 30, 12, 0, 0, 250000, tzinfo=UTC)
    await touch({created.key_id: used})
    await touch({created.key_id: used - timedelta(seconds=1)})  # a late batch: ignored
    (key,) = await list_keys(services, created.account_id)
    assert key.last_used_at == used
    await revoke_key(services, created.account_id, created.key_id)
    found = await lookup(key_hash)
    assert found is not None and found.revoked
