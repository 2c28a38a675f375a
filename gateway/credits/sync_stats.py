"""The sync workers' shared figures in Redis (``keys.SYNC_STATS``), written by the workers and
rendered by every gateway replica's ``/metrics``, so one scrape shows them whichever replica
answers. Counters are summed over all workers; ``lag_ms`` is the latest pass's measure.
"""

from __future__ import annotations

from typing import Protocol

from redis.exceptions import RedisError

from gateway.credits import keys
from gateway.credits.client import RedisClient

COUNTERS = ("applied", "batches", "errors", "rejected", "reaped", "expired")


class PassFigures(Protocol):
    """What one pass adds: a counter attribute per name of ``COUNTERS``, and the lag."""

    lag_ms: int


async def publish(redis: RedisClient, delta: PassFigures) -> None:
    """Add a pass's counters to the shared hash and set the lag; best effort."""
    try:
        seconds, micros = await redis.time()
        pipe = redis.pipeline(transaction=False)
        for name in COUNTERS:
            value = getattr(delta, name)
            if value:
                pipe.hincrby(keys.SYNC_STATS, name, value)
        now = int(seconds) * 1000 + int(micros) // 1000
        pipe.hset(keys.SYNC_STATS, mapping={"lag_ms": delta.lag_ms, "updated_ms": now})
        await pipe.execute()
    except RedisError:
        return


HELP = {
    "applied": ("counter", "Outbox events written to the store of record."),
    "batches": ("counter", "Batches committed to the store of record."),
    "errors": ("counter", "Failed sync passes or jobs (retried on the next pass)."),
    "rejected": ("counter", "Outbox events set aside: malformed, or refused by the store."),
    "reaped": ("counter", "Reservations past their deadline refunded by the reaper."),
    "expired": ("counter", "Ended subscriptions downgraded by the expiry sweep."),
    "lag_ms": ("gauge", "Age of the oldest event not yet in the store, in ms, at the last pass."),
}


def prometheus_lines(stats: dict[str, int]) -> list[str]:
    """The shared hash (``read``) as Prometheus text lines, ``creditgate_sync_*``."""
    lines: list[str] = []
    for name, (kind, text) in HELP.items():
        metric = f"creditgate_sync_{name}" + ("_total" if kind == "counter" else "")
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        lines.append(f"{metric} {stats.get(name, 0)}")
    return lines


async def read(redis: RedisClient) -> dict[str, int]:
    """The shared hash as integers (empty when no worker has run)."""
    raw = await redis.hgetall(keys.SYNC_STATS)
    return {str(k): int(v) for k, v in raw.items()}
