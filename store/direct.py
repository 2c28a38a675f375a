"""The store's answers a serving process needs, straight on the DB-API driver (sqlite3, psycopg).

A gateway worker asks the store three things while it proxies: an API key by its hash (at a
key cache miss), ``last_used_at`` for the keys it served (a batch every few seconds), and
whether the schema is this version's (at start and in the readiness probe). Through
SQLAlchemy and SQLModel these would cost every worker some 20 MB of memory for three
statements (issue 16), so ``DirectStore`` runs them itself, on a few connections of its own
(the callers are threads of ``asyncio.to_thread``). They answer what ``repository.find_api_key``
/ ``touch_api_keys`` and ``database.check_schema`` answer, on both backends
(``tests/store/test_direct.py`` compares them); the tables are ``store.models``'.

``DirectStore.for_url`` takes the URLs a server is configured with: a SQLite file, or
PostgreSQL (its parts read as SQLAlchemy reads them, handed to psycopg as its dialect hands
them). For any other (an in-memory SQLite, which only the engine's own pool can share, a
SQLite URL with options, a PostgreSQL URL naming several hosts) it answers None, and the
caller uses the repository.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from store.errors import SchemaOutdated, StoreUnavailable
from store.records import ApiKeyRecord
from store.schema import head_revision
from store.timefmt import as_utc

T = TypeVar("T")

READERS = 4
WAIT_S = 30.0
"""How long a caller waits for a free connection (SQLAlchemy's pool timeout, as before)."""
"""Read connections a worker keeps at most (SQLAlchemy's pool, which this replaces, kept 5)."""
SQLITE_BUSY_TIMEOUT_MS = 5000
PG_CONNECT_TIMEOUT_S = 5
POSTGRESQL_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")

KEY_COLUMNS = (
    "id, account_id, key_hash, display_prefix, name, created_at, revoked_at, last_used_at, "
    "expires_at, credit_limit, requests_per_minute, routes"
)
FIND_KEY = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = {{p}}"
TOUCH_KEY = (
    "UPDATE api_keys SET last_used_at = {p} WHERE id = {p}"
    " AND (last_used_at IS NULL OR last_used_at < {p})"
    " AND (revoked_at IS NULL OR revoked_at >= {p})"
)
"""As ``repository.touch_api_keys``: never back in time, never later than the revocation."""
REVISION = "SELECT version_num FROM alembic_version"


POSTGRESQL_URL = re.compile(
    r"""(?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?
        (?:\[(?P<ipv6>[^/?]+)\]|(?P<host>[^/:?]+))?
        (?::(?P<port>[^/?]*))?
        (?:/(?P<dbname>[^?]*))?
        (?:\?(?P<query>.*))?$""",
    re.VERBOSE,
)
"""A URL's parts after ``scheme://``, split as SQLAlchemy's ``make_url`` splits them: the
password runs to the last ``@`` before the host (it may hold ``/``), and is percent-decoded
only where it is percent-encoded."""


def postgresql_parameters(rest: str) -> dict[str, str] | None:
    """psycopg's connection parameters for a PostgreSQL URL's ``rest`` (after ``://``), as the
    engine's dialect gives them: the parts decoded, the query's parameters as they are; None
    when the URL does not parse (the engine then says what is wrong) or names several hosts
    (the engine serves those)."""
    found = POSTGRESQL_URL.match(rest)
    if found is None:
        return None
    parameters: dict[str, str] = {}
    for name in ("user", "password", "dbname"):
        if found[name]:
            parameters[name] = unquote(found[name])
    host = found["ipv6"] or found["host"]
    if host:
        parameters["host"] = unquote(host)
    if found["port"]:
        parameters["port"] = found["port"]
    query: dict[str, str] = {}
    for name, value in parse_qsl(found["query"] or "", keep_blank_values=True):
        if name in query or (name == "host" and ":" in value and not value.startswith("/")):
            return None  # a failover list of hosts and ports: the engine's dialect splits it
        query[name] = value
    return parameters | query


def sqlite_pragmas(connection: Any) -> None:
    """What every SQLite connection to the store sets (the engine's too): a busy timeout,
    foreign keys, and WAL (in-memory databases answer 'memory' and stay that way)."""
    cursor = connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _first_line(exc: Exception) -> StoreUnavailable:
    text = str(exc).strip()
    return StoreUnavailable(f"database: {text.splitlines()[0] if text else type(exc).__name__}")


class _Lines:
    """Up to ``size`` DB-API connections for threads to take turns on: each opened at first
    need, dropped when it fails, and replaced once when it had gone stale (a restarted
    database). A caller beyond ``size`` waits for one to come back."""

    def __init__(
        self, connect: Callable[[], Any], failures: tuple[type[Exception], ...], size: int
    ) -> None:
        self._connect = connect
        self._failures = failures
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._closed = False

    def run(self, work: Callable[[Any], T]) -> T:
        """``work(connection)``; driver failures, and no connection free within
        ``WAIT_S``, become ``StoreUnavailable``."""
        if not self._slots.acquire(timeout=WAIT_S):
            raise StoreUnavailable(f"database: no connection free within {WAIT_S:g} s")
        try:
            with self._lock:
                idle = self._idle.pop() if self._idle else None
            if idle is not None:
                try:
                    return self._attempt(idle, work)
                except self._failures:
                    pass  # it had gone stale: one more try, on a new connection
            try:
                return self._attempt(self._connect(), work)
            except self._failures as exc:
                raise _first_line(exc) from exc
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections, and each busy one as its work ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            _close(connection)

    def _attempt(self, connection: Any, work: Callable[[Any], T]) -> T:
        """``work(connection)``; the connection kept for the next caller if it worked, else
        closed (its state is unknown)."""
        try:
            result = work(connection)
        except BaseException:
            _close(connection)
            raise
        with self._lock:
            kept = not self._closed
            if kept:
                self._idle.append(connection)
        if not kept:
            _close(connection)
        return result


def _close(connection: Any) -> None:
    if connection is not None:
        try:
            connection.close()
        except Exception:  # closing a broken connection may fail too: it is gone either way
            pass


class DirectStore:
    """The serving path's statements on DB-API connections: up to ``READERS`` read (keys, the
    schema: a cold cache's lookups run side by side, as on the engine's pool), one writes
    (``last_used_at``), so that a write waiting for SQLite's lock (the sync worker writing)
    never holds up a key lookup."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        sqlite: bool,
        failures: tuple[type[Exception], ...],
    ) -> None:
        self._sqlite = sqlite
        self._param = "?" if sqlite else "%s"
        self._reads = _Lines(connect, failures, READERS)
        self._writes = _Lines(connect, failures, 1)

    @classmethod
    def for_url(cls, url: str) -> DirectStore | None:
        """The direct store for a database URL (``CREDITGATE_DATABASE_URL``); None when only
        the engine can serve it (see the module's docstring). Nothing is opened yet."""
        scheme, sep, rest = url.partition("://")
        if sep and scheme in SQLITE_SCHEMES:
            path = rest[1:] if rest.startswith("/") else ""
            if path and path != ":memory:" and "?" not in path and "%" not in path:
                return cls._for_sqlite(path)
        if sep and scheme in POSTGRESQL_SCHEMES:
            parameters = postgresql_parameters(rest)
            return None if parameters is None else cls._for_postgresql(parameters)
        return None

    @classmethod
    def _for_sqlite(cls, path: str) -> DirectStore:
        def connect() -> Any:
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            sqlite_pragmas(connection)
            return connection

        failures = (sqlite3.OperationalError, sqlite3.InterfaceError)
        return cls(connect, sqlite=True, failures=failures)

    @classmethod
    def _for_postgresql(cls, parameters: dict[str, str]) -> DirectStore:
        """psycopg's connection from the URL's parts, as the engine's dialect passes them."""
        import psycopg

        options: dict[str, Any] = {"autocommit": True, **parameters}
        options.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)

        def connect() -> Any:
            return psycopg.connect(**options)

        # ProgrammingError: a parameter libpq refuses, or a statement on a store without
        # this version's tables (the schema check says which).
        failures = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.ProgrammingError)
        return cls(connect, sqlite=False, failures=failures)

    def find_api_key(self, *, key_hash: str) -> ApiKeyRecord | None:
        """The key with that hash, revoked or not (``repository.find_api_key``)."""
        sql = FIND_KEY.format(p=self._param)
        row = self._reads.run(lambda c: c.execute(sql, (key_hash,)).fetchone())
        return None if row is None else self._api_key(row)

    def touch_api_keys(self, *, used: Mapping[str, datetime]) -> None:
        """Record when keys were last used, in one transaction (``repository.touch_api_keys``)."""
        if not used:
            return
        sql = TOUCH_KEY.format(p=self._param)
        params = []
        for key_id in sorted(used):
            at = self._bind_time(used[key_id])
            params.append((at, key_id, at, at))

        def touch(connection: Any) -> None:
            if self._sqlite:
                with connection:  # sqlite3 in autocommit: the block is one transaction
                    connection.execute("BEGIN")
                    connection.executemany(sql, params)
            else:
                with connection.transaction(), connection.cursor() as cursor:
                    cursor.executemany(sql, params)

        self._writes.run(touch)

    def current_revision(self) -> str | None:
        """The migration the database is at; None for an empty one (as
        ``database.current_revision``)."""

        def read(connection: Any) -> str | None:
            if self._sqlite:
                found = connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
                ).fetchone()
            else:
                found = connection.execute("SELECT to_regclass('alembic_version')").fetchone()
                found = found if found and found[0] is not None else None
            if found is None:
                return None
            row = connection.execute(REVISION).fetchone()
            return None if row is None else str(row[0])

        return self._reads.run(read)

    def check_schema(self) -> str:
        """The database's revision when it is this version's; ``SchemaOutdated`` otherwise."""
        found = self.current_revision()
        wanted = head_revision()
        if found != wanted:
            raise SchemaOutdated(found, wanted)
        return found

    def close(self) -> None:
        self._reads.close()
        self._writes.close()

    def _bind_time(self, value: datetime) -> object:
        """A time as the column holds it: UTC; on SQLite the text SQLAlchemy writes (no zone),
        which compares in time order."""
        utc = as_utc(value)
        return f"{utc.replace(tzinfo=None):%Y-%m-%d %H:%M:%S.%f}" if self._sqlite else utc

    def _time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)

    def _api_key(self, row: tuple[Any, ...]) -> ApiKeyRecord:
        key_id, account_id, key_hash, prefix, name, created, revoked, used, expires = row[:9]
        credit_limit, requests_per_minute, routes = row[9:]
        created_at = self._time(created)
        assert created_at is not None  # NOT NULL
        return ApiKeyRecord(
            key_id=key_id,
            account_id=account_id,
            key_hash=key_hash,
            display_prefix=prefix,
            name=name,
            created_at=created_at,
            revoked_at=self._time(revoked),
            last_used_at=self._time(used),
            expires_at=self._time(expires),
            credit_limit=credit_limit,
            requests_per_minute=requests_per_minute,
            routes=None if routes is None else tuple(json.loads(routes)),
        )
