"""Store fixtures: one test body runs on SQLite (a fresh file) and on PostgreSQL (the
database of CREDITGATE_TEST_PG_URL, its tables dropped and migrated again per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from store.database import create_db_engine, upgrade
from tests.support.samples import empty_postgresql, reset_postgresql

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path, pg_url: str) -> str:
    """A database URL with no tables, on each backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    reset_postgresql(pg_url)
    return pg_url


@pytest.fixture
def db_url(backend: str, tmp_path: Path, pg_url: str) -> str:
    """A database URL migrated to head with empty tables, on each backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        upgrade(url)
        return url
    empty_postgresql(pg_url)
    return pg_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()
