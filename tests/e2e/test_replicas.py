"""Several gateway replicas on one Redis: no double spend, and revocation everywhere in 1 s."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.accounts.keyfields import KeyLimits
from gateway.accounts.operations import create_key, revoke_key
from gateway.services import Services
from tests.support.gateways import (
    WAIT_TIMEOUT_S,
    Backends,
    GatewayCluster,
    NewAccount,
    start_replica,
    stop_procs,
    wait_ready,
    wait_settled,
)

MakeAccount = Callable[..., Awaitable[NewAccount]]
CLIENTS = 30
REQUESTS = 300


async def burst(
    gateway: GatewayCluster, path: str, auth: dict[str, str]
) -> list[tuple[int, str, str]]:
    """``REQUESTS`` POSTs to ``path`` released at once by ``CLIENTS`` clients spread over the
    replicas: each answer's status, ``X-Credits-Charged`` and error code."""
    clients = [
        httpx.AsyncClient(
            base_url=gateway.urls[i % len(gateway.urls)],
            timeout=30,
            limits=httpx.Limits(max_connections=REQUESTS // CLIENTS),
        )
        for i in range(CLIENTS)
    ]
    try:
        gate = asyncio.Event()

        async def call(i: int) -> tuple[int, str, str]:
            await gate.wait()
            response = await clients[i % CLIENTS].post(path, headers=auth)
            error = response.json().get("error", "") if response.status_code != 200 else ""
            return response.status_code, response.headers.get("x-credits-charged", ""), error

        tasks = [asyncio.create_task(call(i)) for i in range(REQUESTS)]
        gate.set()
        return await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def test_300_concurrent_requests_on_100_credits_over_3_replicas(
    gateway: GatewayCluster, account: MakeAccount, backends: Backends, services: Services
) -> None:
    acct = await account("pro")  # 100 credits, 120 requests per minute
    assert len(gateway.urls) == 3
    before = backends.codegen.hits_now()
    answers = await burst(gateway, "/api/projects/echo", acct.auth)
    assert Counter(status for status, _, _ in answers) == {200: 100, 429: REQUESTS - 100}
    assert backends.codegen.hits_now() - before == 100
    state = await services.credits.status(acct.account_id)
    assert state is not None and state.credits_remaining == 0


async def test_metered_calls_over_3_replicas_never_charge_past_the_credits(
    gateway: GatewayCluster, account: MakeAccount, backends: Backends, services: Services
) -> None:
    """A metered route (holds 5, charges ceil(tokens / 2000) = 2 for 4000 tokens, gives 3
    back): 300 calls at once on 100 credits. Whatever the interleaving of holds and give-backs,
    every call that reached the backend was charged exactly its tokens' credits, and no more
    than the 100 credits' worth of tokens (200,000) was ever paid for."""
    acct = await account("pro")  # 100 credits, 120 requests per minute
    before = backends.codegen.hits_now()
    answers = await burst(gateway, "/api/metered/json?tokens=4000", acct.auth)
    passed = [charged for status, charged, _ in answers if status == 200]
    assert {status for status, _, _ in answers} <= {200, 429}
    assert set(passed) == {"2"} and len(passed) >= 20  # at least 100 / 5 holds
    assert backends.codegen.hits_now() - before == len(passed)
    await wait_settled(services, acct.account_id, total_tokens=4000 * len(passed))
    state = await services.credits.status(acct.account_id)
    assert state is not None
    assert state.credits_remaining == 100 - 2 * len(passed) >= 0
    assert state.total_tokens == 4000 * len(passed) <= 100 * 2000


async def test_a_key_limit_below_the_balance_holds_over_3_replicas(
    gateway: GatewayCluster, account: MakeAccount, backends: Backends, services: Services
) -> None:
    """300 calls at once through one key limited to 30 credits a period, on an account of 100
    and over 3 replicas: the key's limit is checked in the same script as the account's
    credits, so exactly 30 reach the backend, whatever replica serves them, and the account's
    other 70 credits stay its own."""
    acct = await account("pro")  # 100 credits, 120 requests per minute
    made = await create_key(services, acct.account_id, limits=KeyLimits(credit_limit=30))
    before = backends.codegen.hits_now()
    answers = await burst(
        gateway, "/api/projects/echo", {"Authorization": f"Bearer {made.api_key}"}
    )
    assert Counter(status for status, _, _ in answers) == {200: 30, 429: REQUESTS - 30}
    assert {error for status, _, error in answers if status == 429} == {"key_credit_limit"}
    assert backends.codegen.hits_now() - before == 30
    state = await services.credits.status(acct.account_id)
    assert state is not None and state.credits_remaining == 70


async def test_revocation_reaches_every_replica_within_a_second(
    gateway: GatewayCluster, account: MakeAccount, services: Services
) -> None:
    acct = await account("pro")
    async with httpx.AsyncClient(timeout=5) as http:
        for url in gateway.urls:  # every replica has the key cached
            ok = await http.get(f"{url}/api/user/usage", headers=acct.auth)
            assert ok.status_code == 200
        await revoke_key(services, acct.account_id, acct.key_id)
        announced = time.monotonic()
        pending = set(gateway.urls)
        while pending and time.monotonic() - announced < 1.0:
            for url in list(pending):
                response = await http.get(f"{url}/api/user/usage", headers=acct.auth)
                if response.status_code == 401:
                    pending.discard(url)
            await asyncio.sleep(0.02)
        assert not pending, f"still accepting the revoked key after 1 s: {pending}"
        response = await http.get(f"{gateway.urls[0]}/api/projects/echo", headers=acct.auth)
        assert response.status_code == 401


async def test_serve_with_two_workers(
    gateway_env: dict[str, str], account: MakeAccount, services: Services, tmp_path: Path
) -> None:
    """The workers build their own settings: ``--access-log`` reaches them too, and their
    access lines replace uvicorn's (written although ``start_replica`` logs at WARNING)."""
    env = gateway_env | {"CREDITGATE_LOG_FORMAT": "json"}
    options = ("--workers", "2", "--access-log")
    url, proc, log = start_replica(env, tmp_path, "workers.log", *options)
    try:
        await asyncio.to_thread(wait_ready, url, proc, log)
        acct = await account("pro")
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            responses = [
                await http.get("/api/projects/json?tokens=5", headers=acct.auth) for _ in range(4)
            ]
        assert [r.status_code for r in responses] == [200] * 4
        await wait_settled(services, acct.account_id, total_tokens=20)
        state = await services.credits.status(acct.account_id)
        assert state is not None and (state.credits_remaining, state.total_tokens) == (96, 20)
        lines = await asyncio.to_thread(access_lines, log, len(responses))
    finally:
        stop_procs([proc])
    assert sorted(line["request_id"] for line in lines) == sorted(
        r.headers["x-request-id"] for r in responses
    )
    for line in lines:
        assert (line["account"], line["key_id"], line["route"], line["status"]) == (
            acct.account_id,
            acct.key_id,
            "/api/projects/",
            200,
        )
        assert (line["outcome"], line["credits"], line["tokens"]) == ("charged", 1, 5)
    text = log.read_text()
    assert acct.api_key not in text
    assert "HTTP/1.1" not in text  # uvicorn's access log stays off


def access_lines(log: Path, count: int) -> list[dict[str, Any]]:
    """The JSON lines of the access logger in ``log``, once there are ``count`` of them."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while True:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        found = [line for line in lines if line["logger"] == "creditgate.access"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
