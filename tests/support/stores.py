"""Fresh stores of record for tests: a SQLite file, or the test PostgreSQL database reset."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from gateway.settings import Settings
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


def fresh_store(
    kind: str, tmp_path: Path, pg_url: str, *, sqlite_template: Path | None = None
) -> str:
    """The URL of a migrated, empty store: ``sqlite`` under tmp_path, or ``postgresql``.

    With ``sqlite_template`` (a file migrated once, see ``migrated_sqlite``) the SQLite store is
    a copy of it, which is cheaper than migrating again.
    """
    if kind == "sqlite":
        path = tmp_path / "store.db"
        url = f"sqlite:///{path}"
        if sqlite_template is not None:
            shutil.copyfile(sqlite_template, path)
            return url
    else:
        url = pg_url
        reset_pg_schema(url)
    upgrade(url)
    return url


def migrated_sqlite(directory: Path) -> Path:
    """A SQLite store migrated to head, to copy for each test (``fresh_store``)."""
    path = directory / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def in_process_settings(tmp_path: Path, redis_url: str, **more: Any) -> Settings:
    """Settings of an in-process gateway on the real Redis and a fresh migrated SQLite store,
    with a fixed signing secret; ``more``: its routes, tiers and anything else."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    return Settings.load(
        redis_url=redis_url, database_url=url, signing_secret="unit-secret", **more
    )
