"""The one-time move of Redis's keys from layout 1 (64 buckets) to the current layout.

Layout 2 spreads its buckets evenly over the cluster's slots (``gateway.credits.keys``), so
every account key changes its name. ``creditgate relayout`` moves what layout 1 holds that the
store of record does not: account states (the rate limiter's state with them), reservations
(held ones keep their deadline, settled ones remember their request id as long as they had
left) and admin operation markers. Each key is copied keeping its time to live (the types are
known: hashes, and a string for a marker), then the old one is deleted; a key the new layout
already has (a gateway of the new version restored the account from the store meanwhile) is
kept and the old one dropped.

Run it with the gateways stopped, after a sync pass drained layout 1's outboxes: events still
there would never reach the store, so it refuses while any outbox holds one. Idempotent: a
second run finds nothing to move.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from redis.exceptions import RedisError

from gateway.credits import keys
from gateway.errors import Unavailable

CHUNK = 500


class RelayoutPipeline(Protocol):
    def execute(self, raise_on_error: bool = True) -> Any: ...
    def exists(self, *names: str) -> object: ...
    def hgetall(self, name: str) -> object: ...
    def get(self, name: str) -> object: ...
    def pttl(self, name: str) -> object: ...
    def hset(self, name: str, *, mapping: dict[str, str]) -> object: ...
    def set(self, name: str, value: str) -> object: ...
    def pexpire(self, name: str, time: int) -> object: ...
    def delete(self, *names: str) -> object: ...
    def xlen(self, name: str) -> object: ...
    def zrange(self, name: str, start: int, end: int, *, withscores: bool) -> object: ...
    def zadd(self, name: str, mapping: dict[str, float]) -> object: ...


class RelayoutRedis(Protocol):
    """What the move needs of a Redis client (redis-py's, single or cluster)."""

    def scan_iter(self, *, match: str, count: int) -> AsyncIterator[Any]: ...
    def pipeline(self, *, transaction: Literal[False]) -> RelayoutPipeline: ...


class OutboxNotDrained(Exception):
    """Layout 1's outboxes still hold events the store has not seen."""


@dataclass(slots=True)
class RelayoutReport:
    moved: int = 0
    kept: list[str] = field(default_factory=list)
    """Old keys dropped because the new layout had the key already."""
    deadlines: int = 0
    """Open reservations re-indexed under their new bucket."""


async def relayout(redis: RelayoutRedis) -> RelayoutReport:
    """Move layout 1's account keys and deadline entries; see the module docstring."""
    try:
        return await _relayout(redis)
    except RedisError as exc:
        raise Unavailable(f"redis: {exc}") from exc


async def _relayout(redis: RelayoutRedis) -> RelayoutReport:
    outboxes = [keys.legacy_outbox(b) for b in range(keys.LEGACY_BUCKETS)]
    pending = sum(await _each(redis, outboxes, lambda p, k: p.xlen(k)))
    if pending:
        raise OutboxNotDrained(
            f"{pending} event(s) still in layout 1's outboxes: run `creditgate sync --once` "
            "with the previous version first"
        )
    report = RelayoutReport()
    found: list[str] = []
    async for key in redis.scan_iter(match=keys.LEGACY_ACCOUNT_PATTERN, count=1000):
        found.append(key.decode() if isinstance(key, bytes) else str(key))
    for start in range(0, len(found), CHUNK):
        await _move(redis, found[start : start + CHUNK], report)
    deadlines = [keys.legacy_deadlines(b) for b in range(keys.LEGACY_BUCKETS)]
    entries = await _each(redis, deadlines, lambda p, k: p.zrange(k, 0, -1, withscores=True))
    pipe = redis.pipeline(transaction=False)
    for members in entries:
        for member, score in members:
            text = member.decode() if isinstance(member, bytes) else str(member)
            account = text.partition("|")[0]
            pipe.zadd(keys.account_keys(account).deadlines, {text: score})
            report.deadlines += 1
    for name in (*deadlines, *outboxes):
        pipe.delete(name)
    await pipe.execute()
    return report


async def _move(redis: RelayoutRedis, names: Sequence[str], report: RelayoutReport) -> None:
    moves = [(old, new) for old in names if (new := keys.relayout(old)) is not None]
    pipe = redis.pipeline(transaction=False)
    for old, new in moves:
        if ":o:" in old:
            pipe.get(old)  # an operation marker: a string
        else:
            pipe.hgetall(old)  # an account state or a reservation: a hash
        pipe.pttl(old)
        pipe.exists(new)
    answers = await pipe.execute()
    pipe = redis.pipeline(transaction=False)
    for i, (old, new) in enumerate(moves):
        value, ttl, taken = answers[3 * i : 3 * i + 3]
        pipe.delete(old)
        if not value or int(ttl) == -2:
            continue  # gone meanwhile (expired)
        if int(taken):
            report.kept.append(old)
            continue
        if isinstance(value, dict):
            pipe.hset(new, mapping=value)
        else:
            pipe.set(new, value)
        if int(ttl) > 0:
            pipe.pexpire(new, int(ttl))
        report.moved += 1
    await pipe.execute()


async def _each(redis: RelayoutRedis, names: Sequence[str], command: Any) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    for name in names:
        command(pipe, name)
    answers: list[Any] = await pipe.execute()
    return answers
