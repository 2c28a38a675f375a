"""The long-lived clients one gateway process shares: built at start, closed at shutdown.

Handlers reach them as ``request.app.state.services``; the CLI and the sync worker build
their own with ``open_services``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import Engine

from gateway.credits.client import RedisClient, connect
from gateway.credits.engine import Clock, CreditEngine
from gateway.credits.wire import Wire
from gateway.settings import ConfigError, Settings
from store.database import check_schema, create_db_engine
from store.errors import SchemaOutdated, StoreUnavailable

log = logging.getLogger("creditgate.services")


@dataclass(slots=True)
class Services:
    settings: Settings
    redis: RedisClient
    credits: CreditEngine
    db: Engine

    async def close(self) -> None:
        await self.credits.aclose()
        await self.redis.aclose()
        self.db.dispose()


def open_services(
    settings: Settings, *, clock: Clock | None = None, redis: RedisClient | None = None
) -> Services:
    """Connect to Redis (or the embedded one) and the store; ``redis`` overrides for tests."""
    client = redis if redis is not None else connect(settings)
    # A cluster pipelines per node by itself; a plain client gains from batching, and the
    # scripts get their own hand-written pipeline where the URL allows (``Wire``).
    batch = isinstance(client, AsyncRedis)
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
        db=create_db_engine(settings.database_url),
    )


def check_store(settings: Settings, command: str) -> None:
    """Stop ``command`` from starting on a store whose schema is not this version's.

    An unmigrated store would otherwise pass for ready and fail every call. A store that
    cannot be reached yet is no misconfiguration: it is logged, and the readiness probe and
    the sync passes wait for it.
    """
    engine = create_db_engine(settings.database_url)
    try:
        check_schema(engine)
    except SchemaOutdated as exc:
        raise ConfigError(f"{command}: {exc}") from exc
    except StoreUnavailable as exc:
        log.warning("%s: cannot check the store's schema yet: %s", command, exc)
    finally:
        engine.dispose()
