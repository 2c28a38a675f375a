"""Fixtures of the admin tests: Services on the real Redis (flushed) and a fresh store.

The store is SQLite by default (a copy of a once-migrated file, so each test is cheap);
a test parametrised with ``store_kind="postgresql"`` gets the database of
CREDITGATE_TEST_PG_URL, its schema dropped and migrated again (``store_url``,
tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.services import Services, open_services
from gateway.settings import Settings
from tests.support.admin import ADMIN_TOKEN, admin_client


@pytest.fixture
def store_kind() -> str:
    """SQLite unless a test parametrises ``store_kind`` (``store_url`` is in tests/conftest.py)."""
    return "sqlite"


@pytest.fixture
def make_settings(redis_url: str, store_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "database_url": store_url,
            "admin_token": ADMIN_TOKEN,
        }
        return Settings.load(**(values | overrides))

    return make


@pytest.fixture
async def services(
    real_redis: aioredis.Redis, make_settings: Callable[..., Settings]
) -> AsyncIterator[Services]:
    built = open_services(make_settings())
    yield built
    await built.close()


@pytest.fixture
async def admin(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the admin API, authenticated with the admin token."""
    async with admin_client(services) as client:
        yield client
