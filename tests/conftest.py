"""Shared fixtures: real Redis and PostgreSQL over real connections, fakeredis for the
embedded mode. Where a session shares the machine's servers with another run, point the
tests elsewhere with CREDITGATE_TEST_REDIS_URL (a spare db number) and CREDITGATE_TEST_PG_URL.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import fakeredis
import pytest
import redis.asyncio as aioredis

from gateway.credits.engine import CreditEngine
from gateway.settings import DEFAULT_TIERS

pytest_plugins = ["tests.cluster"]

REDIS_URL = os.environ.get("CREDITGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
PG_URL = os.environ.get(
    "CREDITGATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def pg_url() -> str:
    return PG_URL


@pytest.fixture
async def real_redis() -> AsyncIterator[aioredis.Redis]:
    """A real Redis database, emptied before the test."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(params=["fakeredis", "redis"])
async def any_redis(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    """One test body, run on the embedded fakeredis and on a real Redis."""
    if request.param == "fakeredis":
        client = fakeredis.FakeAsyncRedis(decode_responses=True)
    else:
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


class ManualClock:
    """A clock tests move by hand (ms since the epoch)."""

    def __init__(self, start_ms: int = 1_790_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_engine(any_redis: aioredis.Redis, clock: ManualClock) -> Callable[..., CreditEngine]:
    def make(**kwargs: object) -> CreditEngine:
        kwargs.setdefault("clock", clock)
        return CreditEngine(any_redis, DEFAULT_TIERS, **kwargs)  # type: ignore[arg-type]

    return make
