"""Fixtures of the sync tests: a real Redis, and a fresh store on SQLite or PostgreSQL.

``store_url`` is parametrised, so a test that asks for it (or for ``services``) runs once on
each backend. The PostgreSQL database is the one of CREDITGATE_TEST_PG_URL, emptied (schema
dropped) and migrated before each test.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import create_engine, text

from gateway.services import Services, open_services
from gateway.settings import Settings
from store.database import normalize_url, upgrade
from tests.sync.storeview import StoreView


def reset_pg(url: str) -> None:
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, pg_url: str) -> Iterator[str]:
    """A migrated, empty store of record."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = pg_url
        reset_pg(url)
    upgrade(url)
    yield url


def make_settings(redis_url: str, store_url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=redis_url, database_url=store_url, sync_interval=0.05, **overrides)


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


TRAFFIC = Path(__file__).with_name("traffic.py")


class Traffic:
    """Traffic processes (tests/sync/traffic.py), killed at teardown if still running."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, seed: int, ops: int, accounts: list[str], *extra: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(TRAFFIC),
            self.redis_url,
            str(seed),
            str(ops),
            *accounts,
            *extra,
            stdout=asyncio.subprocess.PIPE,
        )
        self.procs.append(proc)

    async def wait(self) -> list[dict[str, int]]:
        """Wait for every process; their counts. Fails if any process failed."""
        results = []
        for proc in self.procs:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
            assert proc.returncode == 0
            results.append(json.loads(out))
        self.procs.clear()
        return results

    def kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()


@pytest.fixture
async def traffic(redis_url: str) -> AsyncIterator[Traffic]:
    running = Traffic(redis_url)
    yield running
    running.kill()
    for proc in running.procs:
        await proc.wait()
