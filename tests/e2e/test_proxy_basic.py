"""The contract's proxied-routes table, through real gateway processes and real Redis/PG."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from gateway.services import Services
from tests.support.gateways import Backends, GatewayCluster, NewAccount, wait_settled

MakeAccount = Callable[..., Awaitable[NewAccount]]


@pytest.fixture
async def client(gateway: GatewayCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.urls[0], timeout=10) as c:
        yield c


async def test_charged_json_gains_credit_info(
    client: httpx.AsyncClient, account: MakeAccount, backends: Backends, services: Services
) -> None:
    acct = await account("pro")
    response = await client.post("/api/projects/json?tokens=777", headers=acct.auth, content=b"hi")
    assert response.status_code == 200
    body = response.json()
    assert body["backend"] == "codegen"
    assert body["creditInfo"] == {"tokensUsed": 777, "creditsRemaining": 99, "totalTokensUsed": 777}
    assert response.headers["x-credits-charged"] == "1"
    assert response.headers["x-credits-remaining"] == "99"
    assert response.headers["x-tokens-used"] == "777"
    assert int(response.headers["content-length"]) == len(response.content)
    seen = backends.find(response.headers["x-request-id"])
    assert seen is not None and seen.signature_ok
    await wait_settled(services, acct.account_id, total_tokens=777)
    state = await services.credits.status(acct.account_id)
    assert state is not None and state.credits_remaining == 99
