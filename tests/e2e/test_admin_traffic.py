"""The admin API on real gateway replicas while proxied traffic bursts on the same account.

Upgrades, grants, renewals and downgrades go through the admin API of one replica while
clients spread over all replicas spend the account's credits. After a sync pass the ledger
(read back through the admin API) sums to the balance, versions strictly increase, and every
held request was closed exactly once: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from gateway.credits import keys
from gateway.services import Services
from sync.worker import SyncWorker
from tests.support.gateways import GatewayCluster, wait_for

CLIENTS = 12
REQUESTS = 90


async def admin_call(
    http: httpx.AsyncClient, method: str, path: str, body: Any = None, status: int = 200
) -> Any:
    response = await http.request(method, f"/admin{path}", json=body)
    assert response.status_code == status, response.text
    return response.json()


async def full_ledger(http: httpx.AsyncClient, account: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = await admin_call(http, "GET", f"/accounts/{account}/ledger?" + _query(params))
        entries += page["entries"]
        if page["next"] is None:
            return entries
        params["before"] = page["next"]


def _query(params: dict[str, Any]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())


async def test_admin_changes_during_proxied_traffic_keep_the_ledger_exact(
    gateway: GatewayCluster, services: Services
) -> None:
    token = gateway.env["CREDITGATE_ADMIN_TOKEN"]
    admin = httpx.AsyncClient(
        base_url=gateway.urls[0], headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    clients = [
        httpx.AsyncClient(base_url=gateway.urls[i % len(gateway.urls)], timeout=30)
        for i in range(CLIENTS)
    ]
    try:
        created = await admin_call(
            admin, "POST", "/accounts", {"tier": "pro", "months": 1}, status=201
        )
        account = created["account"]["id"]
        auth = {"Authorization": f"Bearer {created['apiKey']}"}
        gate = asyncio.Event()

        async def call(i: int) -> tuple[int, int]:
            await gate.wait()
            response = await clients[i % CLIENTS].post("/api/projects/json", headers=auth)
            return response.status_code, int(response.headers.get("X-Credits-Charged", "0"))

        async def operate() -> None:
            await gate.wait()
            steps = [
                ("grant", {"credits": 10, "reason": "e2e promo"}),
                ("upgrade", {"tier": "enterprise", "months": 1}),
                ("downgrade", {"reason": "e2e"}),
                ("grant", {"credits": 4, "reason": "e2e goodwill"}),
                ("upgrade", {"tier": "pro", "months": 2}),
                ("renew", {"months": 1}),
            ]
            for action, body in steps:
                await admin_call(admin, "POST", f"/accounts/{account}/{action}", body)
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(call(i)) for i in range(REQUESTS)]
        operator = asyncio.create_task(operate())
        gate.set()
        results = await asyncio.gather(*tasks)
        await operator
        statuses = Counter(status for status, _ in results)
        assert set(statuses) <= {200, 429}, statuses
        charged = sum(credits for _, credits in results)
        assert charged == statuses[200] > 0

        async def settled() -> bool:
            members = await services.redis.zrange(keys.account_keys(account).deadlines, 0, -1)
            return not any(m.startswith(f"{account}|") for m in members)

        await wait_for(settled)
        await SyncWorker(services).sync()

        shown = (await admin_call(admin, "GET", f"/accounts/{account}"))["account"]
        ledger = list(reversed(await full_ledger(admin, account)))
        versions = [e["version"] for e in ledger]
        assert versions == sorted(set(versions))  # strictly increasing, oldest first
        assert sum(e["credits"] for e in ledger) == shown["creditsRemaining"]
        assert sum(e["bonusCredits"] for e in ledger) == shown["bonusCredits"]
        kinds = Counter(e["kind"] for e in ledger)
        assert kinds["charge"] == statuses[200]
        assert (kinds["grant"], kinds["upgrade"], kinds["downgrade"], kinds["renew"]) == (
            2,
            2,
            1,
            1,
        )
        closed = [e for e in ledger if e["kind"] in ("charge", "refund")]
        assert len({e["requestId"] for e in closed}) == len(closed)  # one row per request
        assert all(e["heldCredits"] > 0 for e in closed) and kinds["hold"] == 0
        assert shown["totalTokensUsed"] == sum(e["tokens"] for e in ledger)
    finally:
        await asyncio.gather(admin.aclose(), *(c.aclose() for c in clients))
