from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from store import repository
from store.database import create_db_engine, session, upgrade_engine
from store.errors import DuplicateAccount
from tests.support.samples import PERIOD_END


def test_sqlite_files_get_wal_a_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as connection:
            pragma = {
                name: connection.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()
    assert pragma == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1}


def test_an_in_memory_sqlite_is_one_database_for_every_thread() -> None:
    engine = create_db_engine("sqlite://")
    try:
        upgrade_engine(engine)

        def create() -> None:
            with session(engine) as s:
                repository.create_account(
                    s,
                    account_id="acct",
                    email=None,
                    tier="free",
                    plan_credits=5,
                    period_end_ms=PERIOD_END,
                )

        worker = threading.Thread(target=create)
        worker.start()
        worker.join()
        with session(engine) as s:
            assert repository.all_account_ids(s) == ["acct"]
        with pytest.raises(DuplicateAccount):
            create()
    finally:
        engine.dispose()


def test_postgresql_urls_use_psycopg(pg_url: str) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    engine = create_db_engine(plain)
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_unknown_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        create_db_engine("mysql://root@127.0.0.1/x")
