"""Operators change an account while its traffic bursts: nothing lost, nothing counted twice.

Many tasks reserve, settle and refund on one account while others grant, upgrade, renew and
downgrade it through gateway.accounts.operations. Afterwards the account's outbox events must sum to
its balance, carry contiguous versions and a running state that matches, hold every request
exactly once, and the store (after a sync) must agree.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from gateway.accounts import operations as accounts
from gateway.credits import keys
from gateway.credits.outboxes import event_fields
from gateway.services import Services, open_services
from gateway.settings import Settings, Tier
from store import repository
from store.database import session
from sync.worker import SyncWorker

ACCOUNT = "busy"
WORKERS = 24
REQUESTS_PER_WORKER = 15
NO_RATE_LIMIT = {
    "free": Tier(credits=5),
    "pro": Tier(credits=100),
    "enterprise": Tier(credits=1000),
}


async def traffic(services: Services, worker: int, outcomes: Counter[str]) -> None:
    chance = random.Random(worker)
    for n in range(REQUESTS_PER_WORKER):
        request_id = f"w{worker}-r{n}"
        reservation = await services.credits.reserve(ACCOUNT, request_id, 1)
        outcomes[reservation.status] += 1
        if not reservation.held:
            continue
        await asyncio.sleep(0)  # let other tasks interleave while the credit is held
        if chance.random() < 0.7:
            result = await services.credits.settle(ACCOUNT, request_id, chance.randint(1, 5000))
        else:
            result = await services.credits.refund(ACCOUNT, request_id, reason="upstream 502")
        outcomes[result.status] += 1


async def operator(services: Services) -> Counter[str]:
    done: Counter[str] = Counter()
    steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("grant", lambda: accounts.grant(services, ACCOUNT, 10, reason="test: promo")),
        (
            "upgrade",
            lambda: accounts.change_tier(services, ACCOUNT, "upgrade", tier="enterprise", months=1),
        ),
        ("grant", lambda: accounts.grant(services, ACCOUNT, 3, reason="test: goodwill")),
        ("downgrade", lambda: accounts.change_tier(services, ACCOUNT, "downgrade")),
        (
            "upgrade",
            lambda: accounts.change_tier(services, ACCOUNT, "upgrade", tier="pro", months=2),
        ),
        ("renew", lambda: accounts.change_tier(services, ACCOUNT, "renew", months=1)),
        ("grant", lambda: accounts.grant(services, ACCOUNT, 7, reason="test: refund")),
        ("downgrade", lambda: accounts.change_tier(services, ACCOUNT, "downgrade")),
    ]
    for name, step in steps:
        await step()
        done[name] += 1
        await asyncio.sleep(0)
    return done


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
async def test_admin_changes_during_a_burst_lose_and_double_count_nothing(
    real_redis: object, make_settings: Callable[..., Settings], store_kind: str
) -> None:
    services = open_services(make_settings(tiers=NO_RATE_LIMIT))
    try:
        await accounts.create_account(services, account_id=ACCOUNT, tier="pro", months=1)
        outcomes: Counter[str] = Counter()
        results = await asyncio.gather(
            operator(services), *(traffic(services, w, outcomes) for w in range(WORKERS))
        )
        operations = results[0]
        assert operations == {"grant": 3, "upgrade": 2, "downgrade": 2, "renew": 1}
        state = await services.credits.status(ACCOUNT)
        assert state is not None

        stream = keys.account_keys(ACCOUNT).outbox
        entries = await services.redis.xrange(stream)
        events = [f for f in (event_fields(e) for _, e in entries) if f["acct"] == ACCOUNT]

        # The deltas sum to the balance, event by event, and versions strictly increase.
        plan = bonus = 0
        versions = [int(event["v"]) for event in events]
        assert versions == sorted(set(versions))
        for event in events:
            plan += int(event["dp"])
            bonus += int(event["db"])
            assert (int(event["plan"]), int(event["bonus"])) == (plan, bonus), event
        assert (plan, bonus) == (state.plan_credits, state.bonus_credits)
        assert state.version == versions[-1]
        assert bonus == 20 - sum(int(e["rb"]) for e in events if e["kind"] == "charge")

        # Every held request was settled or refunded exactly once (its one event), and only
        # those; a reserve emits nothing.
        kinds = Counter(e["kind"] for e in events)
        closed_ids = [e["rid"] for e in events if e["kind"] in ("charge", "refund")]
        assert len(closed_ids) == len(set(closed_ids)) == outcomes["ok"]
        assert kinds["hold"] == 0
        assert kinds["charge"] == outcomes["charged"] and kinds["refund"] == outcomes["refunded"]
        assert outcomes["ok"] + outcomes["insufficient"] == WORKERS * REQUESTS_PER_WORKER
        assert (kinds["grant"], kinds["upgrade"], kinds["downgrade"], kinds["renew"]) == (
            3,
            2,
            2,
            1,
        )
        assert state.total_tokens == sum(int(e["tok"]) for e in events)

        # The store of record agrees once the sync worker has copied the outbox.
        await SyncWorker(services).sync()
        with session(services.db) as s:
            record = repository.get_account(s, account_id=ACCOUNT)
            totals = repository.ledger_totals(s, account_id=ACCOUNT)
        assert record is not None
        assert (record.plan_credits, record.bonus_credits) == (plan, bonus)
        assert totals[ACCOUNT] == (plan, bonus)
        assert record.version == state.version
    finally:
        await services.close()
