"""Store fixtures: one test body runs on SQLite (a fresh file) and on PostgreSQL (the
database of CREDITGATE_TEST_PG_URL, its tables dropped and migrated again per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from store.database import create_db_engine, upgrade
from tests.store.samples import reset_postgresql

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_url: str) -> str:
    """A database URL with no tables, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    reset_postgresql(pg_url)
    return pg_url


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """A database URL migrated to head, on each backend."""
    upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()
