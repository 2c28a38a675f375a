"""Hostile admin input is a 400 naming the problem, and costs no other caller anything: a
lone surrogate in a reason once hung every script call batched with it."""

from __future__ import annotations

import asyncio

import httpx

from gateway.accounts.operations import create_account
from gateway.services import Services
from tests.support.admin import assert_error


async def test_a_lone_surrogate_is_refused_while_paid_traffic_goes_on(
    admin: httpx.AsyncClient, services: Services
) -> None:
    created = await create_account(services, tier="pro", months=1)
    payer = created.account_id

    async def paid_call(i: int) -> str:
        held = await services.credits.reserve(payer, f"r{i}", 1)
        assert held.held
        settled = await services.credits.settle(payer, f"r{i}", 10)
        return settled.status

    async def hostile_grant() -> httpx.Response:
        body = '{"credits": 1, "reason": "x\\ud800"}'
        return await admin.post(
            f"/admin/accounts/{payer}/grant",
            content=body,
            headers={"Content-Type": "application/json"},
        )

    async def bad_create() -> httpx.Response:
        return await admin.post("/admin/accounts", content='{"email": "a\\udfff@x.io"}')

    results = await asyncio.wait_for(
        asyncio.gather(
            *(paid_call(i) for i in range(20)), *(hostile_grant() for _ in range(20)), bad_create()
        ),
        timeout=20,
    )
    assert results[:20] == ["charged"] * 20
    for response in results[20:40]:
        assert isinstance(response, httpx.Response)
        assert_error(response, 400, "invalid_request", "'reason'", "lone surrogate")
    created_bad = results[40]
    assert isinstance(created_bad, httpx.Response)
    assert_error(created_bad, 400, "invalid_request", "'email'")
    state = await services.credits.status(payer)
    assert state is not None
    assert (state.plan_credits, state.bonus_credits) == (80, 0)  # no grant applied


async def test_a_deeply_nested_body_is_a_400(admin: httpx.AsyncClient) -> None:
    response = await admin.post("/admin/accounts", content=b"[" * 30_000 + b"]" * 30_000)
    assert_error(response, 400, "invalid_request", "nested deeper than")
