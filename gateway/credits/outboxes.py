"""How far the store of record is behind Redis: the age of the oldest outbox event.

The sync worker deletes an event once the store has it, so the oldest entry left on any
bucket's outbox is the oldest movement the store lacks. The sync worker reports it as its
lag metric; the operators' console shows it (from Redis, so any replica can).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.credits import keys
from gateway.credits.client import RedisClient
from gateway.credits.failures import unavailable


def stream_ms(stream_id: str) -> int:
    """The Redis time (ms) at which a stream entry was appended."""
    return int(stream_id.partition("-")[0])


async def lag_ms(redis: RedisClient, buckets: Sequence[int] = range(keys.BUCKETS)) -> int:
    """Age of the oldest event not yet in the store (0 when every stream is empty)."""
    pipe = redis.pipeline(transaction=False)
    for bucket in buckets:
        pipe.xrange(keys.outbox(bucket), count=1)
    try:
        firsts = await pipe.execute()
        seconds, micros = await redis.time()
    except Exception as exc:
        raise unavailable(exc) from exc
    oldest = [stream_ms(first[0][0]) for first in firsts if first]
    if not oldest:
        return 0
    now = int(seconds) * 1000 + int(micros) // 1000
    return max(0, now - min(oldest))
