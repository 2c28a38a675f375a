"""Fixtures of the sync tests: a real Redis, and a fresh store on SQLite or PostgreSQL.

``store_url`` is parametrised, so a test that asks for it (or for ``services``) runs once on
each backend. The PostgreSQL database is the one of CREDITGATE_TEST_PG_URL, emptied (schema
dropped) and migrated before each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.services import Services, open_services
from tests.support.processes import Traffic
from tests.support.stores import fresh_store
from tests.support.storeview import StoreView, make_settings


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, pg_url: str) -> Iterator[str]:
    """A migrated, empty store of record."""
    yield fresh_store(request.param, tmp_path, pg_url)


@pytest.fixture
async def services(
    real_redis: aioredis.Redis, redis_url: str, store_url: str
) -> AsyncIterator[Services]:
    """Services on the real Redis (flushed) and the fresh store, with Redis's clock."""
    built = open_services(make_settings(redis_url, store_url))
    yield built
    await built.close()


@pytest.fixture
def store_view(services: Services) -> StoreView:
    return StoreView(services)


@pytest.fixture
async def traffic(redis_url: str) -> AsyncIterator[Traffic]:
    running = Traffic(redis_url)
    yield running
    running.kill()
    for proc in running.procs:
        await proc.wait()
