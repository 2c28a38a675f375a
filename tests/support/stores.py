"""Fresh stores of record for tests: a SQLite file, or the test PostgreSQL database reset."""

from __future__ import annotations

import shutil
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
