"""The long-lived clients one gateway process shares: built at start, closed at shutdown.

Handlers reach them as ``request.app.state.services``; the CLI and the sync worker build
their own with ``open_services``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import Engine

from gateway.credits.engine import Clock, CreditEngine
from gateway.redis_client import connect
from gateway.settings import Settings
from store.database import create_db_engine


@dataclass(slots=True)
class Services:
    settings: Settings
    redis: Any
    credits: CreditEngine
    db: Engine

    async def close(self) -> None:
        await self.redis.aclose()
        self.db.dispose()


def open_services(settings: Settings, *, clock: Clock | None = None, redis: Any = None) -> Services:
    """Connect to Redis (or the embedded one) and the store; ``redis`` overrides for tests."""
    client = redis if redis is not None else connect(settings)
    return Services(
        settings=settings,
        redis=client,
        credits=CreditEngine(
            client,
            settings.tiers,
            clock=clock,
            hold_ms=settings.reservation_ttl_ms,
            # A cluster pipelines per node by itself; a plain client gains from batching.
            batch=isinstance(client, AsyncRedis),
        ),
        db=create_db_engine(settings.database_url),
    )
