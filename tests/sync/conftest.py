"""Fixtures of the sync tests: a real Redis, and a fresh store on SQLite or PostgreSQL.

``store_url`` (tests/conftest.py) is parametrised, so a test that asks for it (or for
``services``) runs once on each backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.services import Services
from tests.support.storeview import StoreView, store_services


@pytest.fixture
async def services(
    real_redis: aioredis.Redis, redis_url: str, store_url: str
) -> AsyncIterator[Services]:
    """Services on the real Redis (flushed) and the fresh store, with Redis's clock."""
    async with store_services(redis_url, store_url) as built:
        yield built


@pytest.fixture
def store_view(services: Services) -> StoreView:
    return StoreView(services)
