"""Fresh stores of record for tests: a SQLite file, or the test PostgreSQL database reset."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from store.database import normalize_url, upgrade


def reset_pg_schema(url: str) -> None:
    """Drop and recreate the public schema of a PostgreSQL test database (the tests' alone)."""
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


def fresh_store(kind: str, tmp_path: Path, pg_url: str) -> str:
    """The URL of a migrated, empty store: ``sqlite`` under tmp_path, or ``postgresql``."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = pg_url
        reset_pg_schema(url)
    upgrade(url)
    return url
