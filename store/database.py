"""Engines, sessions and migrations for the store of record (SQLite by default, PostgreSQL).

The store is synchronous SQLAlchemy; async callers run it with ``asyncio.to_thread``.
Alembic is imported only to migrate (``upgrade``). A serving process loads neither: it checks
the schema, and looks keys up, through ``store.direct``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from store.direct import PG_CONNECT_TIMEOUT_S, sqlite_pragmas
from store.errors import SchemaOutdated, StoreUnavailable
from store.schema import MIGRATIONS, head_revision

if TYPE_CHECKING:
    from alembic.config import Config

P = ParamSpec("P")
R = TypeVar("R")

UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
"""Driver and pool errors that mean "the database cannot do it now": StoreUnavailable."""


def normalize_url(url: str) -> URL:
    """The URL with a driver the project ships: ``postgresql://`` means psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite in WAL mode with a busy timeout, or PostgreSQL via psycopg.

    Connecting is lazy: an unreachable database shows up as ``StoreUnavailable`` on first use.
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False},
            # One in-memory database for every thread, instead of one per connection.
            poolclass=StaticPool if in_memory else None,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:// or postgresql://")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    sqlite_pragmas(dbapi_connection)


def one_snapshot(db: Session) -> None:
    """Make the rest of ``db``'s transaction read the database as of one moment on PostgreSQL
    (REPEATABLE READ), so that a read of many statements sees no write that lands between
    them; call it before the transaction's first statement. (SQLite's driver reads outside a
    transaction: there, run such a read while nothing writes.)"""
    if db.get_bind().dialect.name == "postgresql":
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})


@contextmanager
def session(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises.

    Connection failures become ``StoreUnavailable``.
    """
    with Session(engine, expire_on_commit=False) as db:
        try:
            yield db
            db.commit()
        except UNAVAILABLE as exc:
            db.rollback()
            raise unavailable(exc) from exc
        except BaseException:
            db.rollback()
            raise


def unavailable(exc: Exception) -> StoreUnavailable:
    """The ``StoreUnavailable`` for a driver error: its first line, never the URL's password."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return StoreUnavailable(f"database: {text.splitlines()[0] if text else type(exc).__name__}")


def boundary(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a store function: connection-level driver errors become ``StoreUnavailable``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    return wrapper


def alembic_config() -> Config:
    """Alembic's configuration, built in code: no ``alembic.ini`` is needed at runtime."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (Alembic's ``alembic_version`` table, read as
    Alembic does); None for an empty database."""
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            found = connection.execute(text("SELECT version_num FROM alembic_version"))
            return found.scalar_one_or_none()
    except UNAVAILABLE as exc:
        raise unavailable(exc) from exc


def check_schema(engine: Engine) -> str:
    """The database's revision when it is the current one; ``SchemaOutdated`` otherwise.

    Who migrates: ``creditgate db upgrade`` (a deploy step, before the new version starts);
    ``serve`` and ``sync`` only check, so two versions never race to migrate one database.
    """
    found = current_revision(engine)
    wanted = head_revision()
    if found != wanted:
        raise SchemaOutdated(found, wanted)
    return found


def upgrade(url: str) -> None:
    """Migrate the database at ``url`` to the newest schema; a no-op when it is there already."""
    engine = create_db_engine(url)
    try:
        upgrade_engine(engine)
    finally:
        engine.dispose()


def upgrade_engine(engine: Engine) -> None:
    """``upgrade`` on an engine the caller owns."""
    from alembic import command

    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except UNAVAILABLE as exc:
        raise unavailable(exc) from exc
