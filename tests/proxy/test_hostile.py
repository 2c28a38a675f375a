"""Hostile requests and backends on the proxied routes (issue 12), in-process.

Requests are handed to the app as raw ASGI scopes where an HTTP client would tidy them
(httpx resolves dot segments itself), so the gateway sees exactly what a hostile client sends.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from starlette.applications import Starlette
from starlette.types import Message

from gateway.accounts.operations import CreatedAccount, create_account
from gateway.app import create_app
from gateway.services import Services, open_services
from gateway.settings import Route, Settings
from tests.support.asgi import http_scope
from tests.support.stubs import serving


class Answer:
    """What the app sent back for one raw ASGI request."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        start = messages[0]
        self.status: int = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        self.body = b"".join(m.get("body", b"") for m in messages[1:])
        self.complete = any(
            m["type"] == "http.response.body" and not m.get("more_body", False)
            for m in messages[1:]
        )


async def call(
    app: Starlette,
    method: str,
    raw_path: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
) -> Answer:
    """One request straight into the app's ASGI callable (its lifespan must be running)."""
    length = (b"content-length", str(len(body)).encode())
    scope = http_scope(method, raw_path, [*headers, length])
    sent = False
    messages: list[Message] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return Answer(messages)


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, list[web.Request], dict[str, Any]]]:
    """A stub recording each request it sees; ``behaviour`` lets a test choose the answer."""
    seen: list[web.Request] = []
    behaviour: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        await request.read()
        special = behaviour.get("handler")
        if special is not None:
            result: web.StreamResponse = await special(request)
            return result
        return web.json_response({"path": request.path, "headers": dict(request.headers)})

    async with serving(handler) as url:
        yield url, seen, behaviour


@pytest.fixture
def two_routes(
    settings: Settings, backend: tuple[str, list[web.Request], dict[str, Any]]
) -> Settings:
    url = backend[0]
    routes = [
        Route(prefix="/api/projects/", upstream=url),
        Route(prefix="/api/review/", upstream=url),
    ]
    return dataclasses.replace(settings, routes=routes)


@pytest.fixture
async def payer(services: Services) -> CreatedAccount:
    """A pro account holding 100 credits."""
    return await create_account(services, tier="pro", months=1)


@pytest.fixture
async def gateway(two_routes: Settings, services: Services) -> AsyncIterator[Starlette]:
    """The app over ``two_routes``, started (its lifespan running) for the test."""
    app = create_app(two_routes, services=services)
    async with app.router.lifespan_context(app):
        yield app


def bearer(account: CreatedAccount) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {account.api_key}".encode())


async def remaining(app: Starlette, key: str) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/api/user/usage", headers={"Authorization": f"Bearer {key}"})
    value: int = response.json()["usage"]["creditsRemaining"]
    return value


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/api/projects/../../admin/accounts",
        b"/api/projects/%2e%2e/%2E%2E/admin/accounts",
        b"/api/projects/..%2f..%2fadmin/accounts",
        b"/api/projects/x%2F..%2F..%2Fadmin",
        b"/api/projects/a%5cb",
        b"/api/projects/a\\..\\b",
        b"/api/projects/./x",
        b"/api/review/../projects/x",
        b"/api/projects/..",
    ],
)
async def test_a_path_climbing_out_of_its_route_is_400_and_never_charged(
    gateway: Starlette,
    payer: CreatedAccount,
    backend: tuple[str, list[web.Request], dict[str, Any]],
    raw_path: bytes,
) -> None:
    answer = await call(gateway, "POST", raw_path, [bearer(payer)], b"{}")
    assert answer.status == 400, answer.body
    assert b'"invalid_request"' in answer.body
    assert backend[1] == []
    assert await remaining(gateway, payer.api_key) == 100


async def test_a_plain_path_is_forwarded_as_routed_and_signed_as_forwarded(
    gateway: Starlette,
    payer: CreatedAccount,
    backend: tuple[str, list[web.Request], dict[str, Any]],
) -> None:
    """Dots inside a segment and encoded characters other than separators still pass."""
    answer = await call(gateway, "POST", b"/api/projects/v1.2/..x/a%20b", [bearer(payer)], b"{}")
    assert answer.status == 200
    (seen,) = backend[1]
    assert seen.raw_path == "/api/projects/v1.2/..x/a%20b"
    assert seen.path == "/api/projects/v1.2/..x/a b"


async def test_a_second_authorization_header_is_400_and_never_charged(
    gateway: Starlette,
    payer: CreatedAccount,
    services: Services,
    backend: tuple[str, list[web.Request], dict[str, Any]],
) -> None:
    other = await create_account(services, tier="pro", months=1)
    auth = [bearer(payer), bearer(other)]
    answer = await call(gateway, "POST", b"/api/projects/x", auth, b"{}")
    assert answer.status == 400
    assert b'"invalid_request"' in answer.body
    assert backend[1] == []
    assert await remaining(gateway, payer.api_key) == 100
    assert await remaining(gateway, other.api_key) == 100


async def test_gateway_headers_spelt_with_underscores_are_not_forwarded(
    gateway: Starlette,
    payer: CreatedAccount,
    backend: tuple[str, list[web.Request], dict[str, Any]],
) -> None:
    headers = [
        bearer(payer),
        (b"x_gateway_account", b"someone-else"),
        (b"x_gateway-tier", b"enterprise"),
        (b"x-gateway_signature", b"forged"),
        (b"x-gateway-request-id", b"forged"),
        (b"x-gatewayish", b"kept"),
    ]
    answer = await call(gateway, "POST", b"/api/projects/x", headers, b"{}")
    assert answer.status == 200
    (seen,) = backend[1]
    names = [name.lower() for name in seen.headers]
    assert not [n for n in names if n.replace("_", "-").startswith("x-gateway-") and "_" in n]
    assert seen.headers["X-Gateway-Account"] == payer.account_id
    assert seen.headers.getall("X-Gateway-Request-Id") != ["forged"]
    assert seen.headers["X-Gatewayish"] == "kept"


async def test_expect_100_continue_is_not_forwarded(
    gateway: Starlette,
    payer: CreatedAccount,
    backend: tuple[str, list[web.Request], dict[str, Any]],
) -> None:
    """Forwarded, a backend that never sends the interim 100 could hold the call."""
    headers = [bearer(payer), (b"expect", b"100-continue")]
    answer = await call(gateway, "POST", b"/api/projects/x", headers, b"{}")
    assert answer.status == 200
    (seen,) = backend[1]
    assert "Expect" not in seen.headers


@asynccontextmanager
async def raw_backend(reply: bytes, *, then: bytes = b"", hang: bool = False) -> AsyncIterator[str]:
    """A TCP backend that reads the request head, writes ``reply`` (then ``then`` after a
    moment), and closes (or, with ``hang``, keeps the connection open)."""

    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            if then:
                await asyncio.sleep(0.05)
                writer.write(then)
                await writer.drain()
            if hang:
                await asyncio.sleep(5)
        finally:
            writer.transport.abort()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def test_an_unasked_101_is_502_and_refunded(settings: Settings, services: Services) -> None:
    created = await create_account(services, tier="pro", months=1)
    auth = [(b"authorization", f"Bearer {created.api_key}".encode())]
    reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    async with raw_backend(reply, then=b"\x81\x05hello", hang=True) as url:
        routed = dataclasses.replace(
            settings, routes=[Route(prefix="/api/projects/", upstream=url)]
        )
        app = create_app(routed, services=services)
        async with app.router.lifespan_context(app):
            answer = await asyncio.wait_for(call(app, "GET", b"/api/projects/ws", auth), 3)
            assert answer.status == 502
            assert b'"bad_gateway"' in answer.body
            assert answer.headers["x-credits-charged"] == "0"
            assert await remaining(app, created.api_key) == 100


async def test_a_stream_breaking_mid_way_is_left_incomplete_and_refunded(
    settings: Settings, services: Services
) -> None:
    """The client must see the break: no final ``more_body: False`` (no clean ``0\\r\\n\\r\\n``)."""
    created = await create_account(services, tier="pro", months=1)
    auth = [(b"authorization", f"Bearer {created.api_key}".encode())]
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    async with raw_backend(head + b"6\r\ndata: \r\n", then=b"5\r\nhel") as url:
        routes = [Route(prefix="/api/projects/", upstream=url)]
        app = create_app(dataclasses.replace(settings, routes=routes), services=services)
        async with app.router.lifespan_context(app):
            answer = await asyncio.wait_for(call(app, "GET", b"/api/projects/sse", auth), 3)
            assert answer.status == 200
            assert answer.body.startswith(b"data: ")
            assert not answer.complete
            assert await remaining(app, created.api_key) == 100


async def test_a_chunked_json_answer_past_the_buffer_limit_streams_on_untouched(
    settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a Content-Length, a JSON answer was buffered whole however large it was."""
    monkeypatch.setattr("gateway.proxy.relay.JSON_LIMIT", 10)
    created = await create_account(services, tier="pro", months=1)
    auth = {"Authorization": f"Bearer {created.api_key}"}
    app = create_app(settings, services=services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.get("/api/projects/chunked-json", headers=auth)
            assert response.status_code == 200
            assert response.content == b'{"usage": {"total_tokens": 88}}'
            assert response.headers["x-tokens-used"] == "2000"
            assert response.headers["x-credits-charged"] == "1"
            monkeypatch.setattr("gateway.proxy.relay.JSON_LIMIT", 1000)
            response = await client.get("/api/projects/chunked-json", headers=auth)
            assert response.json()["creditInfo"]["tokensUsed"] == 88


async def test_an_admin_body_past_its_limit_is_413_without_reading_the_rest(
    settings: Settings, real_redis: aioredis.Redis
) -> None:
    admin = dataclasses.replace(settings, admin_token="admin-secret")
    services = open_services(admin, redis=real_redis)
    app = create_app(admin, services=services)
    auth = {"Authorization": "Bearer admin-secret"}
    pulled = 0

    async def huge() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(3200):  # 200 MiB if all of it were read
            pulled += 1
            yield b" " * 65536

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.post("/admin/accounts", headers=auth, content=huge())
            assert response.status_code == 413
            assert response.json()["error"] == "payload_too_large"
            assert pulled <= 3
            response = await client.post(
                "/admin/accounts", headers=auth, content=b"{}" + b" " * 70_000
            )
            assert response.status_code == 413
            response = await client.post("/admin/accounts", headers=auth, json={"tier": "pro"})
            assert response.status_code == 201
    services.db.dispose()


async def test_a_second_authorization_header_is_400_on_usage_and_admin_too(
    two_routes: Settings, real_redis: aioredis.Redis
) -> None:
    """``/api/user/usage`` took the first of two keys while the proxy refused them."""
    admin = dataclasses.replace(two_routes, admin_token="admin-secret")
    services = open_services(admin, redis=real_redis)
    app = create_app(admin, services=services)
    async with app.router.lifespan_context(app):
        one = await create_account(services, tier="pro", months=1)
        other = await create_account(services, tier="free")
        twice = [bearer(one), bearer(other)]
        for own in (b"/api/user/usage", b"/api/user/usage/history", b"/api/user/ledger"):
            answer = await call(app, "GET", own, twice)
            assert answer.status == 400, (own, answer.body)
            assert b'"invalid_request"' in answer.body
            assert (await call(app, "GET", own, [bearer(one)])).status == 200, own
        token = (b"authorization", b"Bearer admin-secret")
        path = f"/admin/accounts/{one.account_id}".encode()
        answer = await call(app, "GET", path, [token, token])
        assert answer.status == 400, answer.body
        assert b'"invalid_request"' in answer.body
        assert (await call(app, "GET", path, [token])).status == 200
    services.db.dispose()
