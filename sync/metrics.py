"""The sync worker's metrics: kept in the worker and added to a Redis hash for /metrics.

The hash (``keys.SYNC_STATS``) sums the counters of every worker, so the gateway can show
one figure whichever replica serves /metrics; ``lag_ms`` is the latest pass's measure.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from redis.exceptions import RedisError

from gateway import keys

COUNTERS = ("applied", "batches", "errors", "rejected", "reaped", "expired")


@dataclass(slots=True)
class SyncStats:
    """Counters since the worker started, and the lag seen by its latest pass."""

    applied: int = 0
    batches: int = 0
    errors: int = 0
    rejected: int = 0
    reaped: int = 0
    expired: int = 0
    lag_ms: int = 0
    passes: int = 0

    def minus(self, before: SyncStats) -> SyncStats:
        """The counters added since ``before`` (the lag is this one's)."""
        values = {f.name: getattr(self, f.name) - getattr(before, f.name) for f in fields(self)}
        values["lag_ms"] = self.lag_ms
        return SyncStats(**values)

    def copy(self) -> SyncStats:
        return SyncStats(**{f.name: getattr(self, f.name) for f in fields(self)})


async def publish(redis: Any, delta: SyncStats) -> None:
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


async def read(redis: Any) -> dict[str, int]:
    """The shared hash as integers (empty when no worker has run)."""
    raw = await redis.hgetall(keys.SYNC_STATS)
    return {str(k): int(v) for k, v in raw.items()}
