"""The API key cache: no SQL on the hot path, revocations seen through the Redis version."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.accounts.apikeys import hash_key, new_key
from gateway.accounts.keycache import (
    KeyCache,
    KeyEntry,
    announce_key_change,
    bearer_key,
    rules_of,
)
from gateway.credits import keys
from gateway.credits.client import RedisClient
from gateway.credits.scopes import KeyRules
from gateway.errors import KeyExpired, Unauthorized, Unavailable
from store.records import ApiKeyRecord


class FakeStore:
    def __init__(self) -> None:
        self.keys: dict[str, KeyEntry] = {}
        self.lookups = 0
        self.touched: list[dict[str, datetime]] = []
        self.down = False

    async def lookup(self, key_hash: str) -> KeyEntry | None:
        self.lookups += 1
        if self.down:
            raise Unavailable("store: down")
        return self.keys.get(key_hash)

    async def touch(self, used: dict[str, datetime]) -> None:
        self.touched.append(used)


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield client
    await client.aclose()


def issue(store: FakeStore, account: str = "acct_1") -> tuple[str, str]:
    key = new_key()
    store.keys[key.key_hash] = KeyEntry(account, key.key_id, revoked=False)
    return key.secret, key.key_hash


def test_bearer_key_shape() -> None:
    secret = new_key().secret
    assert bearer_key(f"Bearer {secret}") == secret
    assert bearer_key(f"bearer  {secret} ") == secret
    assert bearer_key(secret) is None
    assert bearer_key("Bearer cg_short") is None
    assert bearer_key(None) is None


async def test_known_key_is_looked_up_once(redis: aioredis.Redis) -> None:
    store = FakeStore()
    cache = KeyCache(redis, store.lookup, touch=store.touch)
    secret, _ = issue(store)
    for _ in range(5):
        caller = await cache.authenticate(f"Bearer {secret}")
        assert caller.account_id == "acct_1"
    assert store.lookups == 1
    await cache.flush_touched()
    assert [set(batch) for batch in store.touched] == [{caller.key_id}]


async def test_last_use_is_the_time_of_the_use_not_of_the_write(redis: aioredis.Redis) -> None:
    store = FakeStore()
    cache = KeyCache(redis, store.lookup, touch=store.touch)
    secret, _ = issue(store)
    before = datetime.now(UTC)
    caller = await cache.authenticate(f"Bearer {secret}")
    after = datetime.now(UTC)
    await asyncio.sleep(0.2)  # the flush comes later, as it does every ~5 s
    await cache.flush_touched()
    used = store.touched[0][caller.key_id]
    assert before <= used <= after


async def test_unknown_key_is_cached_as_a_refusal(redis: aioredis.Redis) -> None:
    store = FakeStore()
    cache = KeyCache(redis, store.lookup)
    unknown = new_key().secret
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await cache.authenticate(f"Bearer {unknown}")
    assert store.lookups == 1


async def test_store_outage_is_unavailable_not_unauthorized(redis: aioredis.Redis) -> None:
    store = FakeStore()
    store.down = True
    cache = KeyCache(redis, store.lookup)
    with pytest.raises(Unavailable):
        await cache.authenticate(f"Bearer {new_key().secret}")


async def revocation_reaches(cache: KeyCache, redis: RedisClient, store: FakeStore) -> None:
    """Revoke a cached key in the store, announce it; the cache refuses it within 5 s."""
    secret, key_hash = issue(store)
    await cache.start()
    try:
        await cache.authenticate(f"Bearer {secret}")
        entry = store.keys[key_hash]
        store.keys[key_hash] = KeyEntry(entry.account_id, entry.key_id, revoked=True)
        await announce_key_change(redis, key_hash)
        assert await redis.get(keys.KEYS_VERSION) == "1"

        async def refused() -> bool:
            try:
                await cache.authenticate(f"Bearer {secret}")
            except Unauthorized:
                return True
            return False

        for _ in range(500):
            if await refused():
                break
            await asyncio.sleep(0.01)
        assert await refused()
    finally:
        await cache.stop()


async def test_revocation_drops_the_cache_on_the_next_poll(redis: aioredis.Redis) -> None:
    store = FakeStore()
    await revocation_reaches(KeyCache(redis, store.lookup, poll_interval=0.01), redis, store)


async def test_revocation_on_a_redis_cluster(cluster_redis: RedisCluster) -> None:
    """The announcement was a pipeline holding PUBLISH, which the cluster client refuses:
    revoking answered 500 and every replica kept accepting the key."""
    await cluster_redis.delete(keys.KEYS_VERSION)
    store = FakeStore()
    cache = KeyCache(cluster_redis, store.lookup, poll_interval=0.01)
    await revocation_reaches(cache, cluster_redis, store)


async def test_an_entry_is_looked_up_again_after_its_ttl(redis: aioredis.Redis) -> None:
    """Even with no announcement (Redis lost the version), a revoked key stops within the TTL."""
    store = FakeStore()
    cache = KeyCache(redis, store.lookup, entry_ttl=0.05)
    secret, key_hash = issue(store)
    await cache.authenticate(f"Bearer {secret}")
    await cache.authenticate(f"Bearer {secret}")
    assert store.lookups == 1
    entry = store.keys[key_hash]
    store.keys[key_hash] = KeyEntry(entry.account_id, entry.key_id, revoked=True)
    await asyncio.sleep(0.1)
    with pytest.raises(Unauthorized):
        await cache.authenticate(f"Bearer {secret}")
    assert store.lookups == 2


async def test_unreadable_version_fails_closed(redis: aioredis.Redis) -> None:
    store = FakeStore()
    cache = KeyCache(redis, store.lookup)
    secret, _ = issue(store)
    await cache.check_version()
    await cache.authenticate(f"Bearer {secret}")
    cache._redis = DeadRedis()
    await cache.check_version()
    await cache.authenticate(f"Bearer {secret}")
    assert store.lookups == 2


class DeadRedis:
    async def get(self, key: str) -> str:
        raise RedisConnectionError("connection refused")


def test_hash_is_sha256_hex() -> None:
    assert len(hash_key("cg_" + "a" * 43)) == 64


class SlowStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def lookup(self, key_hash: str) -> KeyEntry | None:
        self.lookups += 1
        await self.gate.wait()
        return self.keys.get(key_hash)


async def test_concurrent_misses_share_one_lookup(redis: aioredis.Redis) -> None:
    store = SlowStore()
    cache = KeyCache(redis, store.lookup)
    secret, _ = issue(store)
    calls = [asyncio.create_task(cache.authenticate(f"Bearer {secret}")) for _ in range(50)]
    await asyncio.sleep(0)
    store.gate.set()
    callers = await asyncio.gather(*calls)
    assert {c.account_id for c in callers} == {"acct_1"}
    assert store.lookups == 1


async def test_lookup_racing_a_revocation_is_not_cached(redis: aioredis.Redis) -> None:
    store = SlowStore()
    cache = KeyCache(redis, store.lookup)
    secret, _ = issue(store)
    call = asyncio.create_task(cache.authenticate(f"Bearer {secret}"))
    await asyncio.sleep(0)
    cache.forget_all()  # a revocation was announced while the store was being read
    store.gate.set()
    await call
    await cache.authenticate(f"Bearer {secret}")
    assert store.lookups == 2


async def test_a_key_past_its_expiry_is_refused_as_expired(redis: aioredis.Redis) -> None:
    store = FakeStore()
    cache = KeyCache(redis, store.lookup, touch=store.touch)
    now_ms = int(time.time() * 1000)
    live, gone = new_key(), new_key()
    store.keys[live.key_hash] = KeyEntry(
        "acct_1", live.key_id, False, KeyRules(live.key_id, expires_at_ms=now_ms + 60_000)
    )
    caller = await cache.authenticate(f"Bearer {live.secret}")
    assert caller.rules == KeyRules(live.key_id, expires_at_ms=now_ms + 60_000)
    store.keys[gone.key_hash] = KeyEntry(
        "acct_1", gone.key_id, False, KeyRules(gone.key_id, expires_at_ms=now_ms - 1)
    )
    with pytest.raises(KeyExpired, match=f"API key {gone.key_id} expired at 20") as refused:
        await cache.authenticate(f"Bearer {gone.secret}")
    assert (refused.value.status, refused.value.code) == (401, "key_expired")
    await cache.flush_touched()
    assert [set(batch) for batch in store.touched] == [{live.key_id}]


def test_rules_of_a_stored_key() -> None:
    made = datetime(2026, 12, 1, tzinfo=UTC)
    plain = ApiKeyRecord("key_1", "acct", "a" * 64, "cg_abcd", None, made, None, None)
    assert rules_of(plain) is None
    limited = replace(
        plain,
        expires_at=datetime(2027, 1, 1, tzinfo=UTC),
        credit_limit=0,
        routes=("/v1",),
    )
    assert rules_of(limited) == KeyRules(
        "key_1", credit_limit=0, expires_at_ms=1_798_761_600_000, routes=("/v1",)
    )
    assert rules_of(replace(plain, requests_per_minute=3)) == KeyRules(
        "key_1", requests_per_minute=3
    )
