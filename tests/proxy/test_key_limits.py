"""A key's own limits on proxied calls, in-process: its credit limit, rate, routes and expiry
refuse with their own answers before the backend sees anything; a metered hold is capped at
what the key may still spend; the store's ledger names the key and route of each movement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from gateway.accounts.keycache import announce_key_change
from gateway.accounts.keyfields import KeyLimits
from gateway.accounts.operations import (
    CreatedAccount,
    create_account,
    create_key,
    revoke_key,
    update_key,
)
from gateway.app import create_app
from gateway.credits import keys
from gateway.services import Services
from gateway.settings import Route, Settings
from store import repository
from store.database import session
from sync.worker import SyncWorker
from tests.support.gateways import credits_left, wait_settled
from tests.support.recording import gateway_client
from tests.support.stores import in_process_settings
from tests.support.stubs import serving


@pytest.fixture
async def stub() -> AsyncIterator[tuple[str, list[str]]]:
    """Answers with the tokens asked (``?tokens=``); records the paths it was called on."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen.append(request.path)
        tokens = int(request.query.get("tokens", "0"))
        return web.json_response({"ok": True, "usage": {"total_tokens": tokens}})

    async with serving(answer) as url:
        yield url, seen


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, stub: tuple[str, list[str]]) -> Settings:
    return in_process_settings(
        tmp_path,
        redis_url,
        routes=[
            Route(prefix="/llm/", upstream=stub[0], pricing="tokens", max_credits=20),
            Route(prefix="/flat/", upstream=stub[0], cost=2),
            Route(prefix="/v1/", upstream=stub[0], cost=2, errors="openai"),
        ],
    )


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(create_app(settings, services=services)) as http:
        yield http


@pytest.fixture
async def pro(services: Services) -> CreatedAccount:
    return await create_account(services, tier="pro", months=1)  # 100 credits, 120 a minute


async def key_of(services: Services, account: CreatedAccount, **limits: object) -> dict[str, str]:
    made = await create_key(services, account.account_id, limits=KeyLimits(**limits))  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {made.api_key}"}


async def test_a_credit_limit_below_the_balance_refuses_with_its_own_429(
    client: httpx.AsyncClient,
    services: Services,
    pro: CreatedAccount,
    stub: tuple[str, list[str]],
) -> None:
    auth = await key_of(services, pro, credit_limit=5)
    passed = [await client.post("/flat/a", headers=auth) for _ in range(2)]
    assert [p.status_code for p in passed] == [200, 200]
    assert '"key-credits";q=5;w=2592000;qu="credits"' in passed[1].headers["ratelimit-policy"]
    assert '"key-credits";r=1;' in passed[1].headers["ratelimit"]
    hits = len(stub[1])

    refused = await client.post("/flat/a", headers=auth)

    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "key_credit_limit" and "1 credits" in body["message"]
    assert body["creditInfo"]["creditsRemaining"] == 96
    assert refused.headers["x-should-retry"] == "false"
    assert int(refused.headers["retry-after"]) > 86_400  # the period's end
    assert len(stub[1]) == hits  # the backend never saw it
    assert await credits_left(services, pro.account_id) == 96  # nothing held by the refusal
    other = await client.post("/flat/a", headers={"Authorization": f"Bearer {pro.api_key}"})
    assert other.status_code == 200  # the account's first key has no limit of its own


async def test_a_metered_hold_is_capped_at_what_the_key_may_still_spend(
    client: httpx.AsyncClient, services: Services, pro: CreatedAccount
) -> None:
    auth = await key_of(services, pro, credit_limit=4)
    first = await client.post("/llm/json", params={"tokens": 3000}, headers=auth, json={})
    assert first.status_code == 200 and first.headers["x-credits-charged"] == "2"
    await wait_settled(services, pro.account_id, total_tokens=3000)
    # The route's bound is 20; the key has 2 left: they are held and cap the charge.
    capped = await client.post("/llm/json", params={"tokens": 50_000}, headers=auth, json={})
    assert capped.status_code == 200 and capped.headers["x-credits-charged"] == "2"
    await wait_settled(services, pro.account_id, total_tokens=53_000)
    refused = await client.post("/llm/json", params={"tokens": 1}, headers=auth, json={})
    assert refused.status_code == 429 and refused.json()["error"] == "key_credit_limit"
    assert await credits_left(services, pro.account_id) == 96


async def test_a_key_rate_and_its_routes(
    client: httpx.AsyncClient,
    services: Services,
    pro: CreatedAccount,
    stub: tuple[str, list[str]],
) -> None:
    paced = await key_of(services, pro, requests_per_minute=2)
    statuses = [(await client.post("/flat/a", headers=paced)).status_code for _ in range(2)]
    assert statuses == [200, 200]
    slow = await client.post("/flat/a", headers=paced)
    assert slow.status_code == 429 and slow.json()["error"] == "key_rate_limited"
    assert slow.headers["x-should-retry"] == "true"
    assert int(slow.headers["retry-after"]) == 30  # one call back every 30 s
    assert '"key-minute";r=0;t=30' in slow.headers["ratelimit"]

    narrow = await key_of(services, pro, routes=("/llm",))
    hits = len(stub[1])
    outside = await client.post("/flat/a", headers=narrow)
    assert outside.status_code == 403 and outside.json()["error"] == "route_not_allowed"
    assert len(stub[1]) == hits
    inside = await client.post("/llm/json", params={"tokens": 10}, headers=narrow, json={})
    assert inside.status_code == 200
    assert await credits_left(services, pro.account_id) == 100 - 4 - 1


async def test_openai_routes_answer_key_refusals_in_openai_shape(
    client: httpx.AsyncClient, services: Services, pro: CreatedAccount
) -> None:
    auth = await key_of(services, pro, credit_limit=1)
    refused = await client.post("/v1/chat/completions", headers=auth, json={})
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "key_credit_limit")
    assert "this API key may still spend" in error["message"]


async def test_an_expired_key_is_refused_everywhere(
    client: httpx.AsyncClient, services: Services, pro: CreatedAccount
) -> None:
    made = await create_key(services, pro.account_id, limits=KeyLimits())
    auth = {"Authorization": f"Bearer {made.api_key}"}
    assert (await client.post("/flat/a", headers=auth)).status_code == 200
    past = datetime.now(UTC) - timedelta(seconds=1)
    with session(services.db) as s:
        repository.update_api_key(
            s, account_id=pro.account_id, key_id=made.key_id, changes={"expires_at": past}
        )
    await announce_key_change(services.redis, made.key_id)
    announced = asyncio.get_running_loop().time()
    while (await client.get("/api/user/usage", headers=auth)).status_code == 200:
        assert asyncio.get_running_loop().time() - announced < 1.0, "still served after 1 s"
        await asyncio.sleep(0.05)
    for path in ("/flat/a", "/api/user/usage"):
        expired = await client.request("POST" if path == "/flat/a" else "GET", path, headers=auth)
        assert expired.status_code == 401 and expired.json()["error"] == "key_expired"


async def test_the_ledger_names_the_key_and_route_of_each_request(
    client: httpx.AsyncClient, services: Services, pro: CreatedAccount
) -> None:
    made = await create_key(services, pro.account_id, name="ci", limits=KeyLimits())
    auth = {"Authorization": f"Bearer {made.api_key}"}
    assert (await client.post("/flat/a", headers=auth)).status_code == 200
    metered = await client.post("/llm/json", params={"tokens": 1}, headers=auth, json={})
    assert metered.status_code == 200
    await wait_settled(services, pro.account_id, total_tokens=1)
    await SyncWorker(services).sync()
    with session(services.db) as s:
        rows = repository.ledger_page(s, account_id=pro.account_id, limit=10)
    moved = sorted((r.kind, r.route, r.key_id) for r in rows if r.kind == "charge")
    assert moved == [("charge", "/flat/", made.key_id), ("charge", "/llm/", made.key_id)]


async def spend_four_and_sync(
    client: httpx.AsyncClient, services: Services, pro: CreatedAccount, auth: dict[str, str]
) -> None:
    for _ in range(2):
        assert (await client.post("/flat/a", headers=auth)).status_code == 200
    await wait_settled(services, pro.account_id, total_tokens=0)
    await SyncWorker(services).sync()


async def test_a_key_limit_survives_redis_losing_the_account(
    client: httpx.AsyncClient, services: Services, pro: CreatedAccount
) -> None:
    """Redis lost the account and its keys' counts: the restore takes the key's spend this
    period from the store's ledger, so the limit still holds."""
    auth = await key_of(services, pro, credit_limit=5)
    await spend_four_and_sync(client, services, pro, auth)
    lost = keys.account_keys(pro.account_id)
    await services.redis.delete(lost.state, lost.key_limits)

    refused = await client.post("/flat/a", headers=auth)  # restored: 1 left of 5

    assert refused.status_code == 429 and refused.json()["error"] == "key_credit_limit"
    assert await credits_left(services, pro.account_id) == 96


async def test_a_limit_set_later_counts_what_the_key_spent_this_period(
    client: httpx.AsyncClient, services: Services, pro: CreatedAccount
) -> None:
    made = await create_key(services, pro.account_id, limits=KeyLimits())
    auth = {"Authorization": f"Bearer {made.api_key}"}
    await spend_four_and_sync(client, services, pro, auth)

    await update_key(services, pro.account_id, made.key_id, changes={"credit_limit": 5})

    assert await services.credits.key_spend(pro.account_id, [made.key_id]) == {made.key_id: 4}
    announced = asyncio.get_running_loop().time()
    while (answer := await client.post("/flat/a", headers=auth)).status_code == 200:
        # served by the old rules (no limit, nothing counted) until the cache drops them
        assert asyncio.get_running_loop().time() - announced < 1.0, "the limit came too late"
        await asyncio.sleep(0.05)
    assert answer.status_code == 429 and answer.json()["error"] == "key_credit_limit"


async def test_a_revoked_keys_count_leaves_redis(
    client: httpx.AsyncClient, services: Services, pro: CreatedAccount
) -> None:
    made = await create_key(services, pro.account_id, limits=KeyLimits(credit_limit=5))
    auth = {"Authorization": f"Bearer {made.api_key}"}
    assert (await client.post("/flat/a", headers=auth)).status_code == 200
    counted = keys.account_keys(pro.account_id).key_limits
    assert await services.redis.hgetall(counted) != {}

    await revoke_key(services, pro.account_id, made.key_id)

    assert await services.redis.hgetall(counted) == {}
