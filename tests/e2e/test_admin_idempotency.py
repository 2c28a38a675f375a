"""Retried admin writes on real replicas: one grant, whichever replicas the retries reach.

A billing system that lost the answer to ``POST .../grant`` sends it again, maybe to another
replica, maybe while the first is still running. With one ``Idempotency-Key`` the account
gains the credits once and the ledger (after a sync pass) shows one movement. (The CLI's
``--idempotency-key`` as a process: tests/e2e/test_admin_cli_process.py.)
"""

from __future__ import annotations

import asyncio
import uuid

import httpx

from gateway.services import Services
from sync.worker import SyncWorker
from tests.support.gateways import GatewayCluster

COPIES = 6


async def test_identical_grants_sent_to_every_replica_at_once_apply_once(
    gateway: GatewayCluster, services: Services
) -> None:
    account = f"idem-{uuid.uuid4().hex[:8]}"
    admin = {"Authorization": f"Bearer {gateway.env['CREDITGATE_ADMIN_TOKEN']}"}
    retry = {**admin, "Idempotency-Key": f"invoice-{account}"}
    grant = {"credits": 30, "reason": "invoice paid"}
    async with httpx.AsyncClient(timeout=10) as http:
        made = await http.post(
            f"{gateway.urls[0]}/admin/accounts", json={"id": account}, headers=admin
        )
        assert made.status_code == 201, made.text
        answers = await asyncio.gather(
            *(
                http.post(f"{url}/admin/accounts/{account}/grant", json=grant, headers=retry)
                for url in gateway.urls * COPIES
            )
        )
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 409} and 200 in statuses, statuses
        late = await http.post(
            f"{gateway.urls[-1]}/admin/accounts/{account}/grant", json=grant, headers=retry
        )
        assert late.status_code == 200 and late.headers["idempotent-replayed"] == "true"
        assert late.json()["account"]["bonusCredits"] == 30

        await SyncWorker(services).sync()
        ledger = await http.get(f"{gateway.urls[0]}/admin/accounts/{account}/ledger", headers=admin)
    granted = [e for e in ledger.json()["entries"] if e["kind"] == "grant"]
    assert [e["credits"] for e in granted] == [30]
