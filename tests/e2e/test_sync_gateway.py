"""A burst through the gateway replicas (charges, refunds, grants, tier changes), one sync
pass, and the store equals Redis with every movement once (the e2e PostgreSQL store)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx

from gateway.services import Services
from sync.worker import SyncWorker
from tests.support.gateways import GatewayCluster, NewAccount
from tests.support.storeview import StoreView, assert_accounts_in_sync

MakeAccount = Callable[..., Awaitable[NewAccount]]
REQUESTS = 160
PATHS = (
    "/api/projects/json?tokens=1500",  # charged, tokens from the body
    "/api/review/plain",  # charged, tokens from the header
    "/api/costly/json",  # 3 credits
    "/api/projects/status?code=500",  # refunded
    "/api/dead/x",  # 502, refunded
)


async def test_gateway_burst_then_one_pass_store_equals_redis(
    gateway: GatewayCluster, account: MakeAccount, services: Services
) -> None:
    accounts = [await account("pro") for _ in range(4)] + [await account("free", bonus=3)]
    admin = {"Authorization": f"Bearer {gateway.env['CREDITGATE_ADMIN_TOKEN']}"}
    rng = random.Random(5)
    clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in gateway.urls]
    try:

        async def proxied(i: int) -> int:
            acct = rng.choice(accounts)
            response = await clients[i % len(clients)].get(rng.choice(PATHS), headers=acct.auth)
            return response.status_code

        async def operator(i: int) -> int:
            acct = accounts[i % len(accounts)].account_id
            action, body = rng.choice(
                [
                    ("grant", {"credits": rng.randrange(1, 9), "reason": "e2e sync"}),
                    ("upgrade", {"tier": "enterprise", "months": 1}),
                    ("renew", {"months": 1}),
                    ("downgrade", {}),
                ]
            )
            url = f"/admin/accounts/{acct}/{action}"
            response = await clients[i % len(clients)].post(url, json=body, headers=admin)
            return response.status_code

        calls = [proxied(i) for i in range(REQUESTS)] + [operator(i) for i in range(24)]
        statuses = Counter(await asyncio.gather(*calls))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert statuses[200] > 0 and statuses[500] > 0 and statuses[502] > 0

    await SyncWorker(services).run_once()

    ids = [a.account_id for a in accounts]
    view = StoreView(services)
    records = await assert_accounts_in_sync(services, view, ids)
    kinds: Counter[str] = Counter()
    for a in ids:
        kinds.update(e.kind for e in await view.ledger(a))
    assert kinds["charge"] > 0 and kinds["refund"] > 0 and kinds["grant"] > 0
    assert kinds["hold"] == 0  # a request's one row is its charge or refund
    assert sum(r.total_tokens for r in records.values()) > 0
