"""The long-lived clients one gateway process shares: built at start, closed at shutdown.

Handlers reach them as ``request.app.state.services``; the CLI and the sync worker build
their own with ``open_services``.

The store's engine (``db``) is built at its first use: SQLAlchemy and SQLModel cost a worker
some 20 MB, and the statements a worker runs while it only proxies (an API key, when keys were
used, the schema's revision) go through ``direct`` instead (issue 16). The first call that
needs the engine imports them in the event loop's thread, once per process (0.2-0.4 s).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.credits.client import RedisClient, connect, is_plain_redis
from gateway.credits.engine import Clock, CreditEngine
from gateway.credits.wire import Wire
from gateway.settings import ConfigError, Settings
from store.direct import DirectStore
from store.errors import SchemaOutdated, StoreUnavailable

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger("creditgate.services")


@dataclass(slots=True)
class Services:
    settings: Settings
    redis: RedisClient
    credits: CreditEngine
    direct: DirectStore | None
    """The serving path's statements without SQLAlchemy; None: the URL needs the engine."""
    _engine: Engine | None = field(default=None, repr=False)
    _building: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def db(self) -> Engine:
        """The store's engine, built (and SQLAlchemy imported) at the first use: once, though
        threads may ask at the same time (``asyncio.to_thread`` work)."""
        with self._building:
            if self._engine is None:
                from store.database import create_db_engine

                self._engine = create_db_engine(self.settings.database_url)
            return self._engine

    async def close(self) -> None:
        await self.credits.aclose()
        await self.redis.aclose()
        if self.direct is not None:
            self.direct.close()
        if self._engine is not None:
            self._engine.dispose()


def open_services(
    settings: Settings, *, clock: Clock | None = None, redis: RedisClient | None = None
) -> Services:
    """Connect to Redis (or the embedded one) and the store; ``redis`` overrides for tests."""
    client = redis if redis is not None else connect(settings)
    # A cluster pipelines per node by itself; a plain client gains from batching, and the
    # scripts get their own hand-written pipeline where the URL allows (``Wire``).
    batch = is_plain_redis(client)
    wire = (
        Wire.for_url(settings.redis_url) if batch and redis is None and settings.redis_url else None
    )
    return Services(
        settings=settings,
        redis=client,
        credits=CreditEngine(
            client,
            settings.tiers,
            clock=clock,
            hold_ms=settings.reservation_ttl_ms,
            batch=batch,
            wire=wire,
        ),
        direct=DirectStore.for_url(settings.database_url),
    )


def check_store(settings: Settings, command: str) -> None:
    """Stop ``command`` from starting on a store whose schema is not this version's.

    An unmigrated store would otherwise pass for ready and fail every call. A store that
    cannot be reached yet is no misconfiguration: it is logged, and the readiness probe and
    the sync passes wait for it.
    """
    try:
        check_schema(settings.database_url)
    except SchemaOutdated as exc:
        raise ConfigError(f"{command}: {exc}") from exc
    except StoreUnavailable as exc:
        log.warning("%s: cannot check the store's schema yet: %s", command, exc)


REDIS_MINIMUM = (7, 0)
"""The credit scripts are a library of Redis Functions (``gateway.credits.scripts``)."""


def check_redis(settings: Settings, command: str) -> None:
    """Stop ``command`` from starting on a Redis older than 7.0: it has no Functions, and
    every credit call would fail. A Redis that cannot be reached yet is no misconfiguration:
    it is logged, and the readiness probe waits for it. The embedded one is always new
    enough; of a cluster, the first seed node answers for all."""
    if settings.embedded_redis or settings.redis_url is None:
        return
    import redis

    url = settings.redis_urls[0]
    try:
        client = redis.Redis.from_url(url, protocol=2, socket_connect_timeout=2, socket_timeout=2)
        try:
            version = str(client.info("server").get("redis_version", ""))
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        log.warning("%s: cannot check the Redis version yet: %s", command, exc)
        return
    found = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if len(found) < 2:
        log.warning("%s: Redis did not say its version (%r); not checked", command, version)
    elif found < REDIS_MINIMUM:
        raise ConfigError(
            f"{command}: the Redis at {_where(url)} is version {version}; creditgate needs "
            "Redis 7.0 or later (its credit scripts are a library of Redis Functions)"
        )


def _where(url: str) -> str:
    """A Redis URL's host and port (or socket path): never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


def check_schema(url: str) -> str:
    """The store's revision when it is this version's, else ``SchemaOutdated``: with
    ``store.direct`` where it takes the URL, so that a server does not load SQLAlchemy."""
    direct = DirectStore.for_url(url)
    if direct is not None:
        try:
            return direct.check_schema()
        finally:
            direct.close()
    from store.database import check_schema as check_engine
    from store.database import create_db_engine

    engine = create_db_engine(url)
    try:
        return check_engine(engine)
    finally:
        engine.dispose()
