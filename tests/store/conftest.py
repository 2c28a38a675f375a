"""Store fixtures: one test body runs on SQLite (a fresh file) and on PostgreSQL (the
database of CREDITGATE_TEST_PG_URL, its tables dropped and migrated again per test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, SQLModel

import store.models  # noqa: F401  (the tables to drop)
from store.database import create_db_engine, session, upgrade
from store.records import Movement

BACKENDS = ["sqlite", "postgresql"]


def reset_postgresql(url: str) -> None:
    """Drop the store's tables and Alembic's bookkeeping, so ``upgrade`` starts from nothing."""
    engine = create_db_engine(url)
    try:
        with engine.begin() as connection:
            SQLModel.metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()


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


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """One transaction, committed at the end of the test (like the callers' ``session``)."""
    with session(engine) as s:
        yield s


MakeMovement = Callable[..., Movement]

T0 = 1_790_000_000_000
"""A fixed Redis clock reading (ms) the movements start at."""
PERIOD_END = T0 + 30 * 86_400_000


@pytest.fixture
def movement() -> MakeMovement:
    """Build a Movement: version ``v`` of account ``acct``; other fields follow from them."""

    def make(acct: str, v: int, **fields: object) -> Movement:
        values: dict[str, object] = {
            "event_id": f"7-{T0 + v}-{acct}",
            "account_id": acct,
            "kind": "charge",
            "plan_delta": -1,
            "bonus_delta": 0,
            "tokens": 2000,
            "request_id": f"req-{acct}-{v}",
            "reason": None,
            "occurred_ms": T0 + v * 1000,
            "version": v,
            "plan_credits": 100 - v,
            "bonus_credits": 0,
            "tier": "pro",
            "subscribed": True,
            "subscription_ends_ms": PERIOD_END,
            "period_end_ms": PERIOD_END,
            "total_tokens": 2000 * v,
            "monthly_tokens": 2000 * v,
        }
        values.update(fields)
        return Movement(**values)  # type: ignore[arg-type]

    return make
