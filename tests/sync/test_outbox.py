"""The outbox reader's parts on a real Redis: parsing, pruning dead consumers, metrics, pause."""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from gateway.credits import keys
from gateway.credits.engine import CreditEngine
from gateway.credits.outboxes import event_fields
from gateway.services import Services
from gateway.settings import DEFAULT_TIERS
from sync.metrics import registry_of
from sync.outbox import OutboxReader, parse_movement
from sync.worker import MAX_BACKOFF_S, SyncWorker
from tests.support.scrapes import text_of, total


async def test_an_engine_event_parses_to_a_movement(real_redis: aioredis.Redis) -> None:
    engine = CreditEngine(real_redis, DEFAULT_TIERS, clock=lambda: 1_790_000_000_000)
    await engine.open("acct-p", tier="free")
    await engine.grant("acct-p", 4, reason="sorry", request_id="")
    bucket = keys.bucket_of("acct-p")
    (_, opened), (stream_id, granted) = await real_redis.xrange(keys.outbox(bucket))

    m = parse_movement(bucket, stream_id, granted)

    assert m.event_id == f"{bucket}-{stream_id}"
    assert (m.account_id, m.kind, m.plan_delta, m.bonus_delta) == ("acct-p", "grant", 0, 4)
    assert (m.plan_credits, m.bonus_credits, m.tier) == (5, 4, "free")
    assert m.version == parse_movement(bucket, "0-1", opened).version + 1  # same us: +1
    assert m.request_id is None and m.reason == "sorry"
    assert m.subscribed is False and m.subscription_ends_ms is None
    assert m.occurred_ms == 1_790_000_000_000
    assert m.period_end_ms == 1_790_000_000_000 + 30 * 86_400_000
    assert parse_movement(bucket, "1-0", opened).plan_delta == 5


@pytest.mark.parametrize(
    "reason",
    ["ticket 12: refund 3 credits\nréclamation:  2:x", "a NUL\x00inside"],
    ids=["colons, spaces, accents", "NUL"],
)
async def test_a_reason_of_any_characters_comes_through_whole(
    real_redis: aioredis.Redis, reason: str
) -> None:
    """The API refuses control characters in a reason; the event must not depend on it."""
    engine = CreditEngine(real_redis, DEFAULT_TIERS)
    await engine.open("acct-q", tier="free")
    await engine.grant("acct-q", 3, reason=reason, request_id="op 7:1")
    bucket = keys.bucket_of("acct-q")
    (_, _), (stream_id, granted) = await real_redis.xrange(keys.outbox(bucket))

    m = parse_movement(bucket, stream_id, granted)

    assert (m.reason, m.request_id, m.bonus_delta, m.bonus_credits) == (reason, "op 7:1", 3, 3)


async def test_an_event_of_an_older_gateway_parses_as_the_same_movement(
    real_redis: aioredis.Redis,
) -> None:
    engine = CreditEngine(real_redis, DEFAULT_TIERS)
    await engine.open("acct-o", tier="pro")
    bucket = keys.bucket_of("acct-o")
    [(stream_id, packed)] = await real_redis.xrange(keys.outbox(bucket))
    # An older gateway's scripts wrote one stream field per name.
    await real_redis.xadd(keys.outbox(bucket), dict(event_fields(packed)))
    [_, (old_id, old_form)] = await real_redis.xrange(keys.outbox(bucket))

    new, old = parse_movement(bucket, stream_id, packed), parse_movement(bucket, old_id, old_form)

    assert list(packed) == ["f"]
    assert replace(old, event_id=new.event_id) == new
    assert (new.kind, new.plan_delta, new.tier, new.subscribed) == ("open", 100, "pro", True)


async def test_prune_forgets_idle_consumers_with_nothing_pending(
    real_redis: aioredis.Redis,
) -> None:
    engine = CreditEngine(real_redis, DEFAULT_TIERS)
    stream = keys.outbox(keys.bucket_of("acct-q"))
    done, stuck, me = (OutboxReader(real_redis, name) for name in ("done", "stuck", "me"))
    await done.ensure_groups()
    await engine.open("acct-q")
    await done.ack(await done.read(10))
    await engine.grant("acct-q", 1, reason="x")
    assert len(await stuck.read(10)) == 1  # pending with "stuck" from now on

    # Every reader is a consumer on every bucket's stream; only "stuck" has something pending.
    assert await me.prune_consumers(idle_ms=-1) == 2 * keys.BUCKETS - 1

    consumers = await real_redis.xinfo_consumers(stream, keys.OUTBOX_GROUP)
    assert [(c["name"], c["pending"]) for c in consumers] == [("stuck", 1)]
    assert await me.prune_consumers(idle_ms=3_600_000) == 0


async def test_each_worker_renders_its_own_figures_for_prometheus_to_add_up(
    services: Services,
) -> None:
    await services.credits.open("acct-m")
    first, second = SyncWorker(services), SyncWorker(services)
    await first.run_once()
    await services.credits.grant("acct-m", 1, reason="x")
    await second.run_once()

    for worker in (first, second):  # one event each: a Prometheus sum over workers reads 2
        text = text_of(registry_of(worker.stats))
        assert total(text, "creditgate_sync_events_applied_total") == 1
        assert total(text, "creditgate_sync_batches_total") == 1
        assert total(text, "creditgate_sync_passes_total") == 1
        assert total(text, "creditgate_sync_lag_seconds") == 0
    assert "# TYPE creditgate_sync_errors_total counter" in text


async def test_pause_doubles_per_failure_up_to_a_cap(services: Services) -> None:
    worker = SyncWorker(services)
    interval = services.settings.sync_interval
    assert worker.pause() == interval
    worker.failures = 3
    assert worker.pause() == interval * 8
    worker.failures = 60
    assert worker.pause() == MAX_BACKOFF_S
