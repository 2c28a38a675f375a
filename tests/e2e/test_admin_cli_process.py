"""The operator's commands as real processes beside running gateway replicas.

``creditgate accounts ...`` and ``creditgate keys ...`` run with the replicas' environment
(no admin token needed); what they change is what the replicas serve, a key revoked
from the shell stops working on every replica, and a command retried with its
``--idempotency-key`` is applied once.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx

from tests.support.gateways import GatewayCluster, wait_for
from tests.support.processes import CREDITGATE


def creditgate(gateway: GatewayCluster, *args: str) -> tuple[int, Any, str]:
    env = {k: v for k, v in gateway.env.items() if k != "CREDITGATE_ADMIN_TOKEN"}
    done = subprocess.run(
        [*CREDITGATE, "--log-level", "WARNING", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    body = json.loads(done.stdout) if done.returncode == 0 and "--json" in args else None
    return done.returncode, body, done.stderr


async def test_cli_changes_are_served_and_revocation_reaches_every_replica(
    gateway: GatewayCluster,
) -> None:
    code, created, err = creditgate(gateway, "accounts", "create", "--tier", "pro", "--json")
    assert code == 0, err
    account = created["account"]["id"]
    auth = {"Authorization": f"Bearer {created['apiKey']}"}

    code, _, err = creditgate(
        gateway, "accounts", "grant", account, "25", "--reason", "e2e", "--json"
    )
    assert code == 0, err
    async with httpx.AsyncClient(timeout=10) as http:
        for url in gateway.urls:
            usage = await http.get(f"{url}/api/user/usage", headers=auth)
            assert usage.status_code == 200, usage.text
            assert usage.json()["usage"]["creditsRemaining"] == 125

        code, revoked, err = creditgate(
            gateway, "keys", "revoke", account, created["keyId"], "--json"
        )
        assert code == 0, err
        assert revoked["key"]["revokedAt"] is not None

        async def refused_everywhere() -> bool:
            answers = [
                await http.get(f"{url}/api/user/usage", headers=auth) for url in gateway.urls
            ]
            return all(a.status_code == 401 for a in answers)

        await wait_for(refused_everywhere)

    code, _, err = creditgate(gateway, "accounts", "show", "nobody-here")
    assert code == 1 and "not_found" in err


def test_the_cli_retried_with_its_key_grants_once(gateway: GatewayCluster) -> None:
    code, created, err = creditgate(gateway, "accounts", "create", "--json")
    assert code == 0, err
    account = created["account"]["id"]
    key = f"grant-{account}"
    grant = ("accounts", "grant", account, "25", "--reason", "e2e", "--idempotency-key", key)
    for _ in range(2):
        code, granted, err = creditgate(gateway, *grant, "--json")
        assert code == 0, err
        assert granted["account"]["bonusCredits"] == 25
    assert "replayed" in err
