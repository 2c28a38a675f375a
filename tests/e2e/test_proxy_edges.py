"""Client disconnects, Idempotency-Key retries and restoring an account Redis lost."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.credits import keys
from gateway.credits.outboxes import event_fields
from gateway.services import Services
from tests.support.gateways import (
    Backends,
    GatewayCluster,
    NewAccount,
    credits_left,
    wait_for,
    wait_settled,
)

MakeAccount = Callable[..., Awaitable[NewAccount]]


@pytest.fixture
async def client(gateway: GatewayCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.urls[0], timeout=10) as c:
        yield c


async def refund_reasons(services: Services, account_id: str) -> list[str]:
    entries = await services.redis.xrange(keys.account_keys(account_id).outbox)
    events = [event_fields(f) for _, f in entries]
    return [f["note"] for f in events if f["acct"] == account_id and f["kind"] == "refund"]


@pytest.mark.parametrize(
    ("replica", "request_head", "body"),
    [
        (1, "GET {path} HTTP/1.1\r\n", ""),
        # A chunked body is streamed upstream, not buffered; its client is watched all the same.
        (2, "POST {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
    ],
    ids=["buffered-body", "streamed-body"],
)
async def test_client_disconnect_before_the_answer_is_refunded(
    gateway: GatewayCluster,
    account: MakeAccount,
    backends: Backends,
    services: Services,
    replica: int,
    request_head: str,
    body: str,
) -> None:
    acct = await account("pro")
    token = secrets.token_hex(8)
    url = urlsplit(gateway.urls[replica])
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = request_head.format(path=f"/api/projects/hang?token={token}")
        writer.write(
            f"{head}Host: x\r\nAuthorization: Bearer {acct.api_key}\r\n\r\n{body}".encode()
        )
        await writer.drain()

        async def reached_backend() -> bool:
            return token in backends.codegen.started

        await wait_for(reached_backend)
        assert await credits_left(services, acct.account_id) == 99
    finally:
        writer.close()
        await writer.wait_closed()

    async def refunded() -> bool:
        return await credits_left(services, acct.account_id) == 100

    try:
        await wait_for(refunded)
    finally:
        backends.codegen.release(token)
    # Refunded for the disconnect, not by the 2 s upstream timeout that would refund it too.
    assert await refund_reasons(services, acct.account_id) == ["client disconnected"]


async def test_idempotent_retry_replays_the_first_answer_on_another_replica(
    gateway: GatewayCluster, account: MakeAccount, backends: Backends, services: Services
) -> None:
    """The retry reaches another process: it gets the first answer's bytes again, neither
    forwarded nor charged; the same key for another body or path is 422."""
    acct = await account("pro")
    headers = {**acct.auth, "Idempotency-Key": "order-42"}
    path = "/api/projects/json?tokens=2500"
    async with httpx.AsyncClient(timeout=10) as http:
        first = await http.post(gateway.urls[0] + path, headers=headers, content=b'{"n": 1}')
        assert first.status_code == 200
        await wait_settled(services, acct.account_id, total_tokens=2500)
        hits = backends.codegen.hits_now()
        retry = await http.post(gateway.urls[1] + path, headers=headers, content=b'{"n": 1}')
        assert retry.status_code == 200
        assert retry.content == first.content  # byte for byte, creditInfo included
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.headers["x-credits-charged"] == "0"
        assert "idempotent-replayed" not in first.headers
        for name in ("content-type", "x-request-id", "x-tokens-used", "x-credits-remaining"):
            assert retry.headers[name] == first.headers[name]

        other_body = await http.post(gateway.urls[2] + path, headers=headers, content=b'{"n": 2}')
        other_path = await http.post(
            gateway.urls[1] + "/api/projects/json", headers=headers, content=b'{"n": 1}'
        )
        other_method = await http.put(gateway.urls[0] + path, headers=headers, content=b'{"n": 1}')
    for mismatch in (other_body, other_path, other_method):
        assert mismatch.status_code == 422
        assert mismatch.json()["error"] == "idempotency_mismatch"
    assert backends.codegen.hits_now() == hits
    assert await credits_left(services, acct.account_id) == 99


async def test_idempotent_retry_of_a_streamed_answer_is_a_conflict(
    client: httpx.AsyncClient, account: MakeAccount, backends: Backends, services: Services
) -> None:
    """A first answer streamed (not JSON) is not kept: its retry is the 409 it was before."""
    acct = await account("pro")
    headers = {**acct.auth, "Idempotency-Key": "order-43"}
    first = await client.post("/api/projects/plain", headers=headers)
    assert first.status_code == 200 and first.text == "hello"
    await wait_settled(services, acct.account_id, total_tokens=77)
    hits = backends.codegen.hits_now()
    retry = await client.post("/api/projects/plain", headers=headers)
    assert retry.status_code == 409
    assert retry.json()["error"] == "conflict"
    assert retry.headers["x-credits-charged"] == "0"
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.headers["x-request-id"] == first.headers["x-request-id"]
    assert backends.codegen.hits_now() == hits
    assert await credits_left(services, acct.account_id) == 99
    other = await client.post("/api/projects/json", headers={**acct.auth, "Idempotency-Key": "b"})
    assert other.status_code == 200
    assert await credits_left(services, acct.account_id) == 98


async def test_idempotent_retry_while_in_flight_is_a_conflict(
    gateway: GatewayCluster, account: MakeAccount, backends: Backends, services: Services
) -> None:
    acct = await account("pro")
    token = secrets.token_hex(8)
    headers = {**acct.auth, "Idempotency-Key": token}
    async with httpx.AsyncClient(timeout=10) as http:
        first = asyncio.create_task(
            http.get(f"{gateway.urls[0]}/api/projects/hang?token={token}", headers=headers)
        )
        try:

            async def started() -> bool:
                return token in backends.codegen.started

            await wait_for(started)
            path = f"/api/projects/hang?token={token}"
            second = await http.get(gateway.urls[2] + path, headers=headers)
            assert second.status_code == 409
            assert "in flight" in second.json()["message"]
            other = await http.get(f"{gateway.urls[1]}/api/projects/hang", headers=headers)
            assert other.status_code == 422  # another request than the one in flight
        finally:
            backends.codegen.release(token)
        assert (await first).status_code == 200
    assert await credits_left(services, acct.account_id) == 99


async def test_refunded_idempotent_request_can_be_retried(
    client: httpx.AsyncClient, account: MakeAccount, backends: Backends, services: Services
) -> None:
    acct = await account("pro")
    headers = {**acct.auth, "Idempotency-Key": "retry-me"}
    token = secrets.token_hex(8)
    path = f"/api/projects/hang?token={token}"
    failed = await client.post(path, headers=headers)  # the backend is too slow: 504
    assert failed.status_code == 504
    assert await credits_left(services, acct.account_id) == 100
    backends.codegen.release(token)  # the same request answers at once from now on
    ok = await client.post(path, headers=headers)
    assert ok.status_code == 200
    await wait_settled(services, acct.account_id, total_tokens=2000)  # no usage: the estimate
    again = await client.post(path, headers=headers)
    assert again.status_code == 200 and again.content == ok.content
    assert again.headers["idempotent-replayed"] == "true"
    assert await credits_left(services, acct.account_id) == 99


async def test_invalid_idempotency_key(client: httpx.AsyncClient, account: MakeAccount) -> None:
    acct = await account("pro")
    response = await client.post(
        "/api/projects/json", headers={**acct.auth, "Idempotency-Key": "x" * 256}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_account_lost_by_redis_is_restored_from_the_store(
    client: httpx.AsyncClient, account: MakeAccount, services: Services
) -> None:
    acct = await account("pro")
    await services.redis.delete(keys.account_keys(acct.account_id).state)
    assert await services.credits.status(acct.account_id) is None
    response = await client.get("/api/projects/json", headers=acct.auth)
    assert response.status_code == 200
    assert response.headers["x-credits-remaining"] == "99"


async def test_client_gone_in_the_middle_of_a_2xx_stream_is_charged(
    gateway: GatewayCluster, account: MakeAccount, backends: Backends, services: Services
) -> None:
    """The gateway's documented choice: the backend did the work, so the request is charged."""
    acct = await account("pro")
    token = secrets.token_hex(8)
    try:
        async with httpx.AsyncClient(base_url=gateway.urls[2], timeout=10) as http:
            async with http.stream(
                "POST", f"/api/projects/sse?token={token}", headers=acct.auth
            ) as response:
                assert await anext(response.aiter_lines()) == 'data: {"delta": "first"}'
            # Leaving the block closes the connection with the stream half read.
    finally:
        backends.codegen.release(token)

    async def settled() -> bool:
        state = await services.credits.status(acct.account_id)
        return state is not None and state.total_tokens > 0

    await wait_for(settled)
    state = await services.credits.status(acct.account_id)
    assert state is not None and state.credits_remaining == 99
    assert state.total_tokens in (4321, 2000)  # the final event's usage, if it was read
