"""Every row of the contract's proxied-routes table, through a real gateway process."""

from __future__ import annotations

import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from gateway.services import Services
from tests.support.gateways import Backends, GatewayCluster, NewAccount, wait_for, wait_settled

MakeAccount = Callable[..., Awaitable[NewAccount]]


@pytest.fixture
async def client(gateway: GatewayCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.urls[0], timeout=10) as c:
        yield c


async def balance(services: Services, account_id: str) -> tuple[int, int]:
    state = await services.credits.status(account_id)
    assert state is not None
    return state.credits_remaining, state.total_tokens


async def test_every_method_body_and_query_reach_the_backend(
    client: httpx.AsyncClient, account: MakeAccount, backends: Backends
) -> None:
    acct = await account("pro")
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        response = await client.request(
            method, "/api/projects/items/x?a=1&b=%20two", headers=acct.auth, content=b"payload"
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["method"], body["path"], body["query"]) == (
            method,
            "/api/projects/items/x",
            "a=1&b=%20two",
        )
        assert body["body"] == "payload"
        assert response.headers["x-credits-charged"] == "1"


async def test_review_route_goes_to_the_review_backend(
    client: httpx.AsyncClient, account: MakeAccount
) -> None:
    acct = await account("pro")
    response = await client.post("/api/review/json", headers=acct.auth, json={"code": "x"})
    assert response.status_code == 200
    assert response.json()["backend"] == "review"


async def test_ratelimit_fields_on_a_charged_answer(
    client: httpx.AsyncClient, account: MakeAccount, services: Services
) -> None:
    acct = await account("pro")
    response = await client.get("/api/projects/json", headers=acct.auth)
    state = await services.credits.status(acct.account_id)
    assert state is not None
    assert response.headers["ratelimit-policy"] == (
        '"credits";q=100;w=2592000;qu="credits", "minute";q=120;w=60'
    )
    credits_part, minute_part = response.headers["ratelimit"].split(", ")
    assert credits_part.startswith('"credits";r=99;t=')
    t = int(credits_part.rsplit("=", 1)[1])
    assert abs(t - math.ceil(state.ms_to_period_end / 1000)) <= 5
    assert minute_part.startswith('"minute";r=119;t=')


async def test_tokens_from_header_estimate_and_route_cost(
    client: httpx.AsyncClient, account: MakeAccount, services: Services
) -> None:
    acct = await account("pro")
    response = await client.get("/api/projects/nousage?htokens=55", headers=acct.auth)
    assert response.json()["creditInfo"]["tokensUsed"] == 55
    response = await client.get("/api/projects/nousage", headers=acct.auth)
    assert response.headers["x-tokens-used"] == "2000"
    response = await client.get("/api/costly/nousage", headers=acct.auth)
    assert response.headers["x-credits-charged"] == "3"
    assert response.json()["creditInfo"] == {
        "tokensUsed": 6000,
        "creditsRemaining": 95,
        "totalTokensUsed": 8055,
    }
    response = await client.get("/api/projects/plain", headers=acct.auth)
    assert response.text == "hello"
    assert response.headers["x-tokens-used"] == "77"
    await wait_settled(services, acct.account_id, total_tokens=8132)
    assert await balance(services, acct.account_id) == (94, 8132)


async def test_non_object_json_is_passed_unchanged(
    client: httpx.AsyncClient, account: MakeAccount
) -> None:
    acct = await account("pro")
    response = await client.get("/api/projects/list", headers=acct.auth)
    assert response.json() == [1, 2, 3]
    assert response.headers["x-credits-charged"] == "1"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer nope", "Basic abc", "Bearer cg_" + "A" * 43],
    ids=["none", "malformed", "not-bearer", "unknown"],
)
async def test_unauthorized(
    client: httpx.AsyncClient, backends: Backends, authorization: str | None
) -> None:
    before = backends.codegen.hits_now()
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get("/api/projects/json", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.json()["success"] is False
    assert backends.codegen.hits_now() == before


async def test_insufficient_credits(
    client: httpx.AsyncClient, account: MakeAccount, backends: Backends, services: Services
) -> None:
    acct = await account("free")
    for _ in range(5):
        assert (await client.get("/api/projects/json", headers=acct.auth)).status_code == 200
    response = await client.get("/api/projects/json", headers=acct.auth)
    assert response.status_code == 429
    body = response.json()
    assert body["error"] == "insufficient_credits"
    assert body["creditInfo"] == {"tokensUsed": 0, "creditsRemaining": 0, "totalTokensUsed": 6170}
    assert response.headers["x-should-retry"] == "false"
    state = await services.credits.status(acct.account_id)
    assert state is not None
    assert abs(int(response.headers["retry-after"]) - state.ms_to_period_end / 1000) <= 5
    assert response.headers["ratelimit"].startswith('"credits";r=0;')
    assert backends.find(response.headers["x-request-id"]) is None


async def test_rate_limited(
    client: httpx.AsyncClient, account: MakeAccount, services: Services
) -> None:
    acct = await account("free", bonus=100)
    statuses = [
        (await client.get("/api/projects/echo", headers=acct.auth)).status_code for _ in range(20)
    ]
    assert statuses == [200] * 20
    response = await client.get("/api/projects/echo", headers=acct.auth)
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-should-retry"] == "true"
    await wait_settled(services, acct.account_id, total_tokens=20 * 2000)
    assert await balance(services, acct.account_id) == (105 - 20, 20 * 2000)


@pytest.mark.parametrize("code", [400, 404, 500, 503])
async def test_backend_error_is_refunded(
    client: httpx.AsyncClient, account: MakeAccount, services: Services, code: int
) -> None:
    acct = await account("pro")
    response = await client.post(f"/api/projects/status?code={code}", headers=acct.auth)
    assert response.status_code == code
    assert response.json() == {"error": f"status {code}"}
    assert response.headers["x-credits-charged"] == "0"
    assert response.headers["x-credits-remaining"] == "100"
    assert await balance(services, acct.account_id) == (100, 0)


async def test_timeout_is_504_and_refunded(
    client: httpx.AsyncClient, account: MakeAccount, backends: Backends, services: Services
) -> None:
    acct = await account("pro")
    token = secrets.token_hex(8)
    try:
        response = await client.get(f"/api/projects/hang?token={token}", headers=acct.auth)
    finally:
        backends.codegen.release(token)
    assert response.status_code == 504
    assert response.json()["error"] == "gateway_timeout"
    assert response.headers["x-credits-charged"] == "0"
    assert await balance(services, acct.account_id) == (100, 0)


async def test_refused_connection_is_502_and_refunded(
    client: httpx.AsyncClient, account: MakeAccount, services: Services
) -> None:
    acct = await account("pro")
    response = await client.get("/api/dead/json", headers=acct.auth)
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"
    assert response.headers["x-credits-charged"] == "0"
    assert response.headers["ratelimit"].startswith('"credits";r=100;')
    assert await balance(services, acct.account_id) == (100, 0)


async def test_spoofed_gateway_headers_are_replaced(
    client: httpx.AsyncClient, account: MakeAccount, backends: Backends
) -> None:
    acct = await account("pro")
    response = await client.get(
        "/api/projects/echo",
        headers={
            **acct.auth,
            "X-Gateway-Account": "someone-else",
            "X-Gateway-Signature": "0" * 64,
            "X-Gateway-Anything": "spoof",
            "X-Forwarded-For": "10.9.9.9",
        },
    )
    seen = backends.find(response.headers["x-request-id"])
    assert seen is not None and seen.signature_ok
    assert seen.headers["x-gateway-account"] == acct.account_id
    assert seen.headers["x-gateway-tier"] == "pro"
    assert seen.headers["x-gateway-credits-remaining"] == "99"
    assert "x-gateway-anything" not in seen.headers
    assert "authorization" not in seen.headers
    assert seen.headers["x-forwarded-for"] == "10.9.9.9, 127.0.0.1"
    assert seen.headers["x-forwarded-proto"] == "http"


async def test_sse_arrives_incrementally_and_is_charged_once(
    client: httpx.AsyncClient, account: MakeAccount, backends: Backends, services: Services
) -> None:
    acct = await account("pro")
    token = secrets.token_hex(8)
    try:
        async with client.stream(
            "POST", f"/api/projects/sse?token={token}", headers=acct.auth
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-credits-charged"] == "1"
            lines = response.aiter_lines()
            first = await anext(lines)
            # The backend is still holding the final event back: this arrived on its own.
            assert first == 'data: {"delta": "first"}'
            assert await balance(services, acct.account_id) == (99, 0)
            backends.codegen.release(token)
            rest = [line async for line in lines if line]
    finally:
        backends.codegen.release(token)
    assert rest[-1] == "data: [DONE]"

    async def charged() -> bool:
        return await balance(services, acct.account_id) == (99, 4321)

    await wait_for(charged)


async def test_usage_endpoint(
    client: httpx.AsyncClient, account: MakeAccount, services: Services
) -> None:
    acct = await account("pro", bonus=7)
    await client.get("/api/projects/json?tokens=10", headers=acct.auth)
    await wait_settled(services, acct.account_id, total_tokens=10)
    response = await client.get("/api/user/usage", headers=acct.auth)
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert response.json()["success"] is True
    assert usage["credits"] == 99 and usage["bonusCredits"] == 7
    assert usage["creditsRemaining"] == 106
    assert usage["totalTokensUsed"] == 10 and usage["monthlyTokensUsed"] == 10
    assert usage["isSubscribed"] is True and usage["subscriptionTier"] == "pro"
    assert usage["subscriptionEndsAt"].endswith("Z")
    assert usage["monthlyResetDate"].endswith("Z")
    assert (await client.get("/api/user/usage")).status_code == 401


async def test_gateway_endpoints_and_unknown_paths(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.json()["checks"] == {"redis": "ok", "store": "ok"}
    missing = await client.get("/nothing/here")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    metrics = await client.get("/metrics")
    assert "creditgate_requests_total" in metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
