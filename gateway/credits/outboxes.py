"""The outbox streams as Redis holds them: what an event's fields are, and how far the store
of record is behind (the age of the oldest event).

The sync worker deletes an event once the store has it, so the oldest entry left on any
bucket's outbox is the oldest movement the store lacks. The sync worker reports it as its
lag metric; the operators' console shows it (from Redis, so any replica can).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.credits import keys
from gateway.credits.client import RedisClient
from gateway.credits.failures import unavailable

PACKED = "f"
"""The one stream field of an event as the scripts write it (``emit`` in common.lua): the
numbers, the lengths of the texts, then the texts."""
SIZED = "e"
"""The one stream field of an event as gateways before ``PACKED`` wrote it: the numbers, then
each text after its length (``<length>:<text>``). Still read: sync workers are upgraded before
the gateways, and a stream may hold events of both."""
PACKED_NUMBERS = (
    *("dp", "db", "tok", "rp", "rb", "ts", "v"),  # the event
    *("plan", "bonus", "sub", "se", "pe", "tt", "mt"),  # the account after it
)
PACKED_TEXTS = ("acct", "kind", "tier", "rid", "note", "key", "route")


def event_fields(fields: Mapping[str, str]) -> Mapping[str, str]:
    """An outbox entry's fields by name, whichever gateway wrote it: one packed field ``f``
    (``PACKED``) or ``e`` (``SIZED``), or, from a gateway before both, one stream field per
    name (given back as it is). ValueError when a packed event is malformed."""
    packed = fields.get(PACKED)
    if packed is not None:
        return _packed(packed)
    sized = fields.get(SIZED)
    if sized is not None:
        return _sized(sized)
    return fields


def _packed(packed: str) -> dict[str, str]:
    *numbers, rest = packed.split(" ", len(PACKED_NUMBERS) + len(PACKED_TEXTS))
    found = dict(zip(PACKED_NUMBERS, numbers[: len(PACKED_NUMBERS)], strict=True))
    lengths = [int(n) for n in numbers[len(PACKED_NUMBERS) :]]
    data, at = rest.encode(), 0
    for name, length in zip(PACKED_TEXTS, lengths, strict=True):
        end = at + length
        if length < 0 or end > len(data):
            raise ValueError(f"outbox event: {name} runs past the end")
        found[name] = data[at:end].decode()
        at = end
    if at != len(data):
        raise ValueError("outbox event: more than its fields")
    return found


def _sized(packed: str) -> dict[str, str]:
    *numbers, rest = packed.split(" ", len(PACKED_NUMBERS))
    found = dict(zip(PACKED_NUMBERS, numbers, strict=True))
    data, at = rest.encode(), 0
    for name in PACKED_TEXTS:
        colon = data.index(b":", at)
        length = int(data[at:colon])
        end = colon + 1 + length
        if length < 0 or end > len(data):
            raise ValueError(f"outbox event: {name} runs past the end")
        found[name] = data[colon + 1 : end].decode()
        at = end
    if at != len(data):
        raise ValueError("outbox event: more than its fields")
    return found


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
