"""Token-metered routes in-process: the hold, the charge by tokens, what the answer shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from gateway.accounts.operations import create_account
from gateway.app import create_app
from gateway.services import Services
from gateway.settings import Route, Settings
from tests.support.gateways import credits_left, wait_settled
from tests.support.recording import gateway_client
from tests.support.stores import in_process_settings
from tests.support.stubs import serving


@pytest.fixture
async def stub() -> AsyncIterator[str]:
    """``/json?tokens=`` and ``/sse?tokens=`` report that usage; ``/nousage`` none."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        tokens = int(request.query.get("tokens", "0"))
        if request.path.endswith("/sse"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n')
            usage = f'data: {{"choices": [], "usage": {{"total_tokens": {tokens}}}}}\n\n'
            await response.write(usage.encode() + b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        if request.path.endswith("/nousage"):
            return web.json_response({"ok": True})
        return web.json_response({"ok": True, "usage": {"total_tokens": tokens}})

    async with serving(answer) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, stub: str) -> Settings:
    return in_process_settings(
        tmp_path,
        redis_url,
        routes=[
            Route(prefix="/llm/", upstream=stub, pricing="tokens", max_credits=20),
            Route(prefix="/flat/", upstream=stub, cost=2),
        ],
    )


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(create_app(settings, services=services)) as http:
        yield http


async def test_a_json_answer_is_charged_by_its_tokens(
    client: httpx.AsyncClient, services: Services
) -> None:
    pro = await create_account(services, tier="pro", months=1)
    auth = {"Authorization": f"Bearer {pro.api_key}"}
    answer = await client.post("/llm/json", params={"tokens": 9000}, headers=auth, json={})
    assert answer.status_code == 200
    assert answer.headers["x-credits-charged"] == "5"  # ceil(9000 / 2000), not the hold of 20
    assert answer.headers["x-credits-remaining"] == "95"
    assert answer.json()["creditInfo"] == {
        "tokensUsed": 9000,
        "creditsRemaining": 95,
        "totalTokensUsed": 9000,
    }
    await wait_settled(services, pro.account_id, total_tokens=9000)
    assert await credits_left(services, pro.account_id) == 95

    flat = await client.post("/flat/json", params={"tokens": 9000}, headers=auth, json={})
    assert flat.headers["x-credits-charged"] == "2"  # a flat route: its cost, as ever
    await wait_settled(services, pro.account_id, total_tokens=18_000)
    assert await credits_left(services, pro.account_id) == 93


async def test_max_tokens_lowers_the_hold_and_caps_the_charge(
    client: httpx.AsyncClient, services: Services
) -> None:
    free = await create_account(services, tier="free")  # 5 credits: less than the bound of 20
    auth = {"Authorization": f"Bearer {free.api_key}"}
    body = {"max_tokens": 4000}  # holds 2
    capped = await client.post("/llm/json", params={"tokens": 9000}, headers=auth, json=body)
    assert capped.headers["x-credits-charged"] == "2"  # never more than held
    await wait_settled(services, free.account_id, total_tokens=9000)
    assert await credits_left(services, free.account_id) == 3

    # No max_tokens: the bound is 20, the account has 3: all of it is held and caps the charge.
    short = await client.post("/llm/json", params={"tokens": 1000}, headers=auth, json={})
    assert short.status_code == 200 and short.headers["x-credits-charged"] == "1"
    await wait_settled(services, free.account_id, total_tokens=10_000)
    assert await credits_left(services, free.account_id) == 2
    big = await client.post("/llm/json", params={"tokens": 60_000}, headers=auth, json={})
    assert big.status_code == 200 and big.headers["x-credits-charged"] == "2"
    await wait_settled(services, free.account_id, total_tokens=70_000)
    assert await credits_left(services, free.account_id) == 0
    refused = await client.post("/llm/json", params={"tokens": 1}, headers=auth, json={})
    assert refused.status_code == 429 and refused.json()["error"] == "insufficient_credits"


async def test_a_stream_is_charged_by_its_final_usage(
    client: httpx.AsyncClient, services: Services
) -> None:
    pro = await create_account(services, tier="pro", months=1)
    auth = {"Authorization": f"Bearer {pro.api_key}"}
    streamed = await client.post("/llm/sse", params={"tokens": 5000}, headers=auth, json={})
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    assert streamed.headers["x-credits-charged"] == "20"  # sent before the tokens: the hold
    await wait_settled(services, pro.account_id, total_tokens=5000)
    assert await credits_left(services, pro.account_id) == 97  # ceil(5000 / 2000)


async def test_an_answer_without_usage_is_charged_its_hold(
    client: httpx.AsyncClient, services: Services
) -> None:
    pro = await create_account(services, tier="pro", months=1)
    auth = {"Authorization": f"Bearer {pro.api_key}"}
    answer = await client.post("/llm/nousage", headers=auth, json={"max_tokens": 6000})
    assert answer.headers["x-credits-charged"] == "3"
    assert answer.json()["creditInfo"]["tokensUsed"] == 6000  # the estimate of 3 credits
    await wait_settled(services, pro.account_id, total_tokens=6000)
    assert await credits_left(services, pro.account_id) == 97
