"""``/readyz`` says which Redis is in use and is ready only on this version's store schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.app import create_app
from gateway.services import Services, open_services
from gateway.settings import Settings
from store.database import head_revision, upgrade


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


@pytest.fixture(params=["direct", "engine"])
async def services(
    request: pytest.FixtureRequest, redis_url: str, store_url: str, real_redis: aioredis.Redis
) -> AsyncIterator[Services]:
    """Services whose store is checked on the driver itself, or through the engine (as for a
    URL ``store.direct`` does not take)."""
    built = open_services(Settings.load(redis_url=redis_url, database_url=store_url))
    if request.param == "engine":
        built.direct = None
    yield built
    await built.close()


async def readyz(services: Services) -> httpx.Response:
    app = create_app(services.settings, services=services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/readyz")


async def test_an_unmigrated_store_is_not_ready_and_says_what_to_run(services: Services) -> None:
    response = await readyz(services)
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "unavailable" and body["redis"] == "redis"
    assert body["checks"]["redis"] == "ok"
    assert "empty (never migrated)" in body["checks"]["store"]
    assert "run `creditgate db upgrade`" in body["checks"]["store"]


async def test_a_migrated_store_is_ready_with_its_revision(
    services: Services, store_url: str
) -> None:
    upgrade(store_url)
    response = await readyz(services)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {"redis": "ok", "store": "ok"},
        "redis": "redis",
        "schema": head_revision(),
    }


async def test_the_embedded_redis_is_reported(store_url: str) -> None:
    upgrade(store_url)
    built = open_services(Settings.load(redis_url="embedded", database_url=store_url))
    try:
        response = await readyz(built)
    finally:
        await built.close()
    assert response.status_code == 200
    assert response.json()["redis"] == "embedded"
