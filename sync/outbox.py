"""Reading the engine's outbox streams as the sync workers' consumer group.

Every credit script appends its event to the outbox stream of the account's bucket
(``keys.outbox(bucket)``). The sync workers share one consumer group (``keys.OUTBOX_GROUP``)
on all of them, so each event is delivered to one worker; it stays pending until that worker
acknowledges it, after the store committed it. An event is deleted from its stream right
before it is acknowledged, so streams hold only what is not yet in the store.

A pass reads, per bucket: this consumer's own pending events (a batch whose commit failed),
events of other consumers idle longer than ``claim_idle_ms`` (a worker that died mid-batch,
claimed with XAUTOCLAIM), then new events. Each command names one stream: that is what Redis
Cluster allows, and a non-transactional pipeline still sends them in one round trip per node.

Delivery is at least once; the store makes it exactly once (the ledger is unique by event id
``"<bucket>-<stream id>"`` and snapshots only move forward by version).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from gateway.credits import keys, outboxes
from gateway.credits.client import RedisClient, StreamFields
from gateway.credits.failures import unavailable
from gateway.credits.results import snapshot_fields
from gateway.errors import Unavailable
from store.records import Movement

DEFAULT_CLAIM_IDLE_MS = 30_000


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One delivered stream entry.

    ``movement`` is None for an entry deleted meanwhile (``fields`` empty) and for one that
    does not parse (``error`` says why); the worker sets the latter aside with ``reject``.
    """

    bucket: int
    stream_id: str
    movement: Movement | None
    fields: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def event_id(self) -> str:
        return event_id(self.bucket, self.stream_id)


def event_id(bucket: int, stream_id: str) -> str:
    """The store's id of an outbox event: unique across buckets, stable across re-deliveries."""
    return f"{bucket}-{stream_id}"


def parse_movement(bucket: int, stream_id: str, fields: Mapping[str, str]) -> Movement:
    """An outbox entry's fields (see ``emit`` in common.lua) as a store Movement: the event,
    and the account's snapshot after it under the hash's names. Reads the packed event of
    this gateway's scripts and the one-field-per-name events of older ones alike (a stream
    written before an upgrade still syncs)."""
    fields = outboxes.event_fields(fields)
    return Movement(
        event_id=event_id(bucket, stream_id),
        account_id=fields["acct"],
        kind=fields["kind"],
        plan_delta=int(fields["dp"]),
        bonus_delta=int(fields["db"]),
        tokens=int(fields["tok"]),
        request_id=fields.get("rid") or None,
        reason=fields.get("note") or None,
        occurred_ms=int(fields["ts"]),
        held_plan=int(fields.get("rp") or 0),
        held_bonus=int(fields.get("rb") or 0),
        route=fields.get("route") or None,
        key_id=fields.get("key") or None,
        **snapshot_fields(fields),
    )


class OutboxReader:
    """One consumer of the outbox group on every bucket stream of one Redis (or Cluster)."""

    def __init__(
        self,
        redis: RedisClient,
        consumer: str,
        *,
        group: str = keys.OUTBOX_GROUP,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
        buckets: Sequence[int] = range(keys.BUCKETS),
    ) -> None:
        self.redis = redis
        self.consumer = consumer
        self.group = group
        self.claim_idle_ms = claim_idle_ms
        self.buckets = list(buckets)

    async def ensure_groups(self) -> None:
        """Create the group on every stream (and the stream), from its start; idempotent."""
        pipe = self.redis.pipeline(transaction=False)
        for bucket in self.buckets:
            pipe.xgroup_create(keys.outbox(bucket), self.group, id="0", mkstream=True)
        try:
            answers = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            raise unavailable(exc) from exc
        for answer in answers:
            if isinstance(answer, Exception) and not str(answer).startswith("BUSYGROUP"):
                raise Unavailable(f"redis: {answer}") from answer

    async def read(self, count: int) -> list[OutboxEntry]:
        """Up to about ``count`` entries per bucket: own pending, claimed from the dead, new.

        A stream or group that vanished (Redis flushed or restarted empty) is recreated and
        read again on the next call.
        """
        try:
            return await self._read(count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise Unavailable(f"redis: {exc}") from exc
        except Exception as exc:
            raise unavailable(exc) from exc
        await self.ensure_groups()
        try:
            return await self._read(count)
        except Exception as exc:
            raise unavailable(exc) from exc

    async def _read(self, count: int) -> list[OutboxEntry]:
        pipe = self.redis.pipeline(transaction=False)
        for bucket in self.buckets:
            stream = keys.outbox(bucket)
            pipe.xreadgroup(self.group, self.consumer, {stream: "0"}, count=count)
            pipe.xautoclaim(
                stream, self.group, self.consumer, self.claim_idle_ms, "0-0", count=count
            )
            pipe.xreadgroup(self.group, self.consumer, {stream: ">"}, count=count)
        answers = await pipe.execute()
        entries: list[OutboxEntry] = []
        for i, bucket in enumerate(self.buckets):
            own, claimed, new = answers[3 * i : 3 * i + 3]
            seen: set[str] = set()
            batches = (_stream_entries(own), list(claimed[1]), _stream_entries(new))
            for batch in batches:
                for stream_id, fields in batch:
                    if stream_id is None or stream_id in seen:
                        continue
                    seen.add(stream_id)
                    entries.append(_entry(bucket, stream_id, fields))
        return entries

    async def reject(self, entry: OutboxEntry, error: str) -> None:
        """Set an entry the store cannot take aside, in its bucket's rejected stream, for
        people to look at; the caller then acknowledges it with its batch."""
        # Copied item by item: redis-py hints the fields as a dict of its own key type, and a
        # dict's key type is invariant, so a Mapping[str, str] cannot be unpacked into one.
        fields: StreamFields = {
            **dict(entry.fields.items()),
            "event": entry.event_id,
            "error": error[:500],
        }
        try:
            await self.redis.xadd(keys.outbox_rejected(entry.bucket), fields)
        except Exception as exc:
            raise unavailable(exc) from exc

    async def ack(self, entries: Iterable[OutboxEntry]) -> None:
        """Delete then acknowledge entries the store has committed.

        Deleting first: if the process dies in between, the entry is still pending but gone,
        and the next read acknowledges it without applying anything (its fields are empty).
        """
        by_bucket: dict[int, list[str]] = {}
        for entry in entries:
            by_bucket.setdefault(entry.bucket, []).append(entry.stream_id)
        if not by_bucket:
            return
        pipe = self.redis.pipeline(transaction=False)
        for bucket, ids in by_bucket.items():
            stream = keys.outbox(bucket)
            pipe.xdel(stream, *ids)
            pipe.xack(stream, self.group, *ids)
        try:
            await pipe.execute()
        except Exception as exc:
            raise unavailable(exc) from exc

    async def prune_consumers(self, idle_ms: int) -> int:
        """Forget consumers with nothing pending, idle longer than ``idle_ms`` (dead workers
        with random names would otherwise pile up in the group); the number removed."""
        pipe = self.redis.pipeline(transaction=False)
        for bucket in self.buckets:
            pipe.xinfo_consumers(keys.outbox(bucket), self.group)
        try:
            answers = await pipe.execute(raise_on_error=False)
            pipe = self.redis.pipeline(transaction=False)
            removed = 0
            for bucket, consumers in zip(self.buckets, answers, strict=True):
                if isinstance(consumers, Exception):
                    continue  # no group yet on this stream: nothing to prune
                for consumer in consumers:
                    name = consumer["name"]
                    stale = int(consumer["idle"]) > idle_ms and int(consumer["pending"]) == 0
                    if stale and name != self.consumer:
                        pipe.xgroup_delconsumer(keys.outbox(bucket), self.group, name)
                        removed += 1
            if removed:
                await pipe.execute()
        except Exception as exc:
            raise unavailable(exc) from exc
        return removed

    async def lag_ms(self) -> int:
        """Age of the oldest event of its buckets not yet in the store (0: none)."""
        return await outboxes.lag_ms(self.redis, self.buckets)


def _entry(bucket: int, stream_id: str, fields: Mapping[str, str]) -> OutboxEntry:
    if not fields:
        return OutboxEntry(bucket, stream_id, None)
    try:
        return OutboxEntry(bucket, stream_id, parse_movement(bucket, stream_id, fields), fields)
    except (KeyError, ValueError) as exc:
        return OutboxEntry(bucket, stream_id, None, fields, f"malformed: {exc!r}")


def _stream_entries(answer: Any) -> list[tuple[str | None, dict[str, str]]]:
    """The entries of a one-stream XREADGROUP answer: ``[[stream, entries]]`` or empty."""
    return list(answer[0][1]) if answer else []
