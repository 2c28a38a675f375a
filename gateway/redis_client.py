"""Connects to Redis: a URL, a Redis Cluster, or an embedded in-process fakeredis for dev."""

from __future__ import annotations

import logging
from typing import Any

from gateway.settings import Settings

log = logging.getLogger("creditgate.redis")

POOL_SIZE = 256
"""Connections per process; Lua calls are short, so this serves thousands of requests/s."""
POOL_WAIT_S = 5.0


def connect(settings: Settings) -> Any:
    """A redis-py asyncio client (decoded responses) for the configured Redis.

    Without ``CREDITGATE_REDIS_URL`` this is an in-process fakeredis running the same Lua
    scripts: state lives in this one process only, so it is for ``creditgate demo`` and
    single-process development, never for replicas or production.
    """
    if settings.redis_url is None:
        import fakeredis

        log.warning(
            "CREDITGATE_REDIS_URL is not set: using an EMBEDDED in-process Redis (fakeredis). "
            "Balances live in this process only: dev and demo use, never production."
        )
        return fakeredis.FakeAsyncRedis(decode_responses=True)
    if settings.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(settings.redis_url, decode_responses=True)
    from redis.asyncio import BlockingConnectionPool, Redis

    # Blocking, so a burst beyond the pool waits for a connection instead of failing with
    # "Too many connections" (redis-py's default pool caps at 100 and raises at once).
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        decode_responses=True,
        health_check_interval=30,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT_S,
    )
    return Redis.from_pool(pool)
