"""Shared fixtures: real Redis and PostgreSQL over real connections, fakeredis for the
embedded mode. Where a session shares the machine's servers with another run, point the
tests elsewhere with CREDITGATE_TEST_REDIS_URL (a spare db number) and CREDITGATE_TEST_PG_URL.

``store_url`` is a migrated, empty store of record on ``store_kind``, which is parametrised:
a test that asks for it (or for a fixture built on it) runs once on SQLite and once on
PostgreSQL (the database of CREDITGATE_TEST_PG_URL, its schema dropped and migrated again).
A directory's conftest or a test's own ``parametrize("store_kind", ...)`` narrows that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import fakeredis
import hypothesis
import pytest
import redis.asyncio as aioredis

from gateway.credits.engine import CreditEngine
from gateway.credits.wire import Wire
from gateway.settings import DEFAULT_TIERS
from tests.support.clocks import ManualClock
from tests.support.processes import Traffic
from tests.support.servers import PG_URL, REDIS_URL
from tests.support.stores import fresh_store, migrated_sqlite

pytest_plugins = ["tests.support.cluster"]

# No per-example time limit: a test here asserts behaviour, never speed (bench/ measures that),
# and a loaded machine must not turn a slow example into a failure.
hypothesis.settings.register_profile(
    "creditgate", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("creditgate")


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


@pytest.fixture(params=["fakeredis", "redis", "redis-wire"])
def redis_kind(request: pytest.FixtureRequest) -> str:
    """fakeredis, a real Redis, or a real Redis whose engines send scripts on a ``Wire``."""
    return str(request.param)


@pytest.fixture
async def any_redis(redis_kind: str) -> AsyncIterator[aioredis.Redis]:
    """One test body, run on the embedded fakeredis and on a real Redis (twice: the engines
    of ``make_engine`` call scripts through redis-py, then through their own ``Wire``)."""
    if redis_kind == "fakeredis":
        client = fakeredis.FakeAsyncRedis(decode_responses=True)
    else:
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def make_engine(
    any_redis: aioredis.Redis, clock: ManualClock, redis_kind: str
) -> AsyncIterator[Callable[..., CreditEngine]]:
    engines: list[CreditEngine] = []

    def make(**kwargs: object) -> CreditEngine:
        kwargs.setdefault("clock", clock)
        if redis_kind == "redis-wire":
            kwargs.setdefault("wire", Wire.for_url(REDIS_URL))
        tiers = kwargs.pop("tiers", DEFAULT_TIERS)
        engine = CreditEngine(any_redis, tiers, **kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_sqlite(tmp_path_factory.mktemp("store"))


@pytest.fixture
def store_url(store_kind: str, sqlite_template: Path, tmp_path: Path, pg_url: str) -> str:
    """A migrated, empty store of record."""
    return fresh_store(store_kind, tmp_path, pg_url, sqlite_template=sqlite_template)


@pytest.fixture
async def traffic(redis_url: str) -> AsyncIterator[Traffic]:
    """Traffic processes on the test Redis (tests/support/processes.py), stopped at teardown."""
    running = Traffic(redis_url)
    yield running
    await running.stop()
