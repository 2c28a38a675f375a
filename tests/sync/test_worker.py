"""The sync worker on real Redis and both stores: bursts from several processes, exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx

from gateway.credits import keys
from gateway.credits.outboxes import event_fields
from gateway.services import Services
from sync.metrics import registry_of
from sync.outbox import OutboxEntry
from sync.webhooks import Notifier
from sync.worker import SyncWorker
from tests.support.processes import ACCOUNTS, Traffic, burst, open_accounts
from tests.support.scrapes import text_of, total
from tests.support.storeview import StoreView, assert_in_sync, ledger_size


async def test_burst_from_processes_then_one_pass(
    services: Services, store_view: StoreView, traffic: Traffic
) -> None:
    events = await burst(services, traffic)
    worker = SyncWorker(services, batch_size=20)

    assert await worker.run_once() == events
    accounts = await assert_in_sync(services, store_view)
    assert set(accounts) == set(ACCOUNTS)
    assert await ledger_size(store_view, accounts) == events
    kinds = {e.kind for a in ACCOUNTS for e in await store_view.ledger(a)}
    assert {"open", "charge", "refund", "grant", "upgrade", "downgrade"} <= kinds
    assert "hold" not in kinds  # a request's one event is its settle or refund
    assert worker.stats.batches >= 2
    text = text_of(registry_of(worker.stats))
    assert total(text, "creditgate_sync_events_applied_total") == events
    assert total(text, "creditgate_sync_lag_seconds") == 0
    assert total(text, "creditgate_sync_errors_total") == 0
    assert await worker.run_once() == 0


async def test_two_workers_at_once_write_each_event_once(
    services: Services, store_view: StoreView, traffic: Traffic
) -> None:
    events = await burst(services, traffic, processes=3)
    first, second = SyncWorker(services, batch_size=5), SyncWorker(services, batch_size=5)

    applied = await asyncio.gather(first.run_once(), second.run_once())

    assert sum(applied) == events
    assert all(applied)
    accounts = await assert_in_sync(services, store_view)
    assert await ledger_size(store_view, accounts) == events


class AckLost(SyncWorker):
    """A worker that commits but dies before acknowledging: its entries stay pending."""

    async def apply(self, entries: list[OutboxEntry]) -> int:
        self.reader.ack = _never  # type: ignore[method-assign]
        return await super().apply(entries)


async def _never(entries: object) -> None:
    return None


async def test_redelivery_after_a_lost_ack_is_a_no_op(
    services: Services, store_view: StoreView
) -> None:
    await open_accounts(services, ACCOUNTS)
    for i, account in enumerate(ACCOUNTS):
        assert (await services.credits.reserve(account, f"r{i}", 1)).held
        await services.credits.settle(account, f"r{i}", 100 + i)
    dead = AckLost(services, consumer="dead", max_batches=1)
    assert await dead.run_once() == 2 * len(ACCOUNTS)
    before = {a: len(await store_view.ledger(a)) for a in ACCOUNTS}

    # The same consumer restarted re-reads its own pending entries...
    again = SyncWorker(services, consumer="dead")
    assert await again.run_once() == 2 * len(ACCOUNTS)
    assert {a: len(await store_view.ledger(a)) for a in ACCOUNTS} == before
    await assert_in_sync(services, store_view)


async def test_pending_of_a_dead_consumer_is_claimed(
    services: Services, store_view: StoreView
) -> None:
    await open_accounts(services, ACCOUNTS)
    dead = AckLost(services, consumer="dead", max_batches=1)
    assert await dead.run_once() == len(ACCOUNTS)
    await services.credits.grant(ACCOUNTS[0], 5, reason="after the crash")

    patient = SyncWorker(services, consumer="other", claim_idle_ms=3_600_000)
    assert await patient.run_once() == 1  # the dead one's entries are not idle long enough
    claimer = SyncWorker(services, consumer="claimer", claim_idle_ms=0)
    assert await claimer.run_once() == len(ACCOUNTS)

    for bucket in range(keys.BUCKETS):
        pending = await services.redis.xpending(keys.outbox(bucket), keys.OUTBOX_GROUP)
        assert pending["pending"] == 0
    await assert_in_sync(services, store_view)


async def test_poison_events_are_set_aside_and_the_rest_synced(
    services: Services, store_view: StoreView
) -> None:
    await open_accounts(services, ACCOUNTS)
    bucket = keys.bucket_of(ACCOUNTS[0])
    stream = keys.outbox(bucket)
    events = [event_fields(fields) for _, fields in await services.redis.xrange(stream)]
    [opened] = [e for e in events if e["acct"] == ACCOUNTS[0]]
    await services.redis.xadd(stream, {"acct": "broken", "kind": "grant"})  # fields missing
    too_big = {**opened, "acct": "huge", "plan": str(2**70)}  # beyond any BIGINT column
    await services.redis.xadd(stream, too_big)
    worker = SyncWorker(services)

    assert await worker.run_once() == len(ACCOUNTS)

    assert worker.stats.rejected == 2
    rejected = await services.redis.xrange(keys.outbox_rejected(bucket))
    assert [(f["acct"], f["error"].split(":")[0]) for _, f in rejected] == [
        ("broken", "malformed"),
        ("huge", "refused by the store"),
    ]
    assert await services.redis.xlen(stream) == 0
    await assert_in_sync(services, store_view)
    assert "huge" not in await store_view.accounts()


async def test_synced_movements_fire_webhooks_once_each(services: Services) -> None:
    """The worker announces what it committed: low and exhausted credits, a renewal."""
    received: list[dict[str, object]] = []

    def receive(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        return httpx.Response(204)

    settings = dataclasses.replace(
        services.settings, webhook_url="http://hooks.test/creditgate", webhook_secret="s"
    )
    client = httpx.AsyncClient(transport=httpx.MockTransport(receive))
    notifier = Notifier.from_settings(settings, client=client)
    worker = SyncWorker(services, notifier=notifier)
    engine = services.credits
    await engine.open("hooked", tier="pro", months=1)
    for i in range(100):
        assert (await engine.reserve("hooked", f"r{i}", 1)).held
        await engine.settle("hooked", f"r{i}", 10)  # the store learns of a charge at its settle
    await engine.set_tier("hooked", "renew", months=1)

    await notifier.start()
    try:
        await worker.run_once()
        await notifier.join()
        assert await worker.run_once() == 0
        await notifier.join()
    finally:
        await notifier.aclose()
        await client.aclose()
    assert [(e["type"], e["account"]) for e in received] == [
        ("credits.low", "hooked"),
        ("credits.exhausted", "hooked"),
        ("subscription.renewed", "hooked"),
    ]
    assert received[0]["data"]["creditsRemaining"] == 20  # type: ignore[index]
