"""The app in-process (httpx ASGI transport) against an aiohttp stub in the same loop.

Covers what whole-process tests reach badly: Redis or store outages answer 503 JSON with
nothing charged, large request bodies stream, chunked JSON answers still gain creditInfo.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette
from starlette.types import Message

from gateway.accounts.operations import create_account
from gateway.app import create_app
from gateway.errors import Unavailable
from gateway.proxy import holds
from gateway.proxy.bodies import CLIENT_GONE
from gateway.server import serve
from gateway.services import Services, open_services
from gateway.settings import Settings
from sync.reaper import reap
from tests.support.asgi import empty_body_then_gone, http_scope
from tests.support.scrapes import series


async def run(app: Starlette, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.request(method, path, **kwargs)


async def test_large_body_streams_and_chunked_json_gains_credit_info(
    settings: Settings, services: Services
) -> None:
    created = await create_account(services, tier="pro", months=1)
    auth = {"Authorization": f"Bearer {created.api_key}"}
    app = create_app(settings, services=services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            big = b"x" * (3 * 1024 * 1024)

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(0, len(big), 65536):
                    yield big[i : i + 65536]

            response = await client.post("/api/projects/upload", headers=auth, content=chunks())
            assert response.status_code == 200
            assert response.json()["size"] == len(big)
            response = await client.get("/api/projects/chunked-json", headers=auth)
            assert json.loads(response.content)["creditInfo"] == {
                "tokensUsed": 88,
                "creditsRemaining": 98,
                "totalTokensUsed": 2000 + 88,
            }


async def test_a_stream_longer_than_the_hold_is_not_reaped(
    settings: Settings, real_redis: aioredis.Redis
) -> None:
    """The proxy keeps a live stream's reservation away from the reaper: charged, not refunded."""
    short = dataclasses.replace(settings, upstream_timeout=0.6, reservation_grace=0.3)
    services = open_services(short, redis=real_redis)
    assert services.credits.hold_ms == 900  # the stream below lasts over 3 s
    try:
        created = await create_account(services, tier="pro", months=1)
        auth = {"Authorization": f"Bearer {created.api_key}"}
        reaped = 0
        streaming = True

        async def reaper() -> None:
            nonlocal reaped
            while streaming:
                reaped += await reap(services.credits)
                await asyncio.sleep(0.05)

        running = asyncio.ensure_future(reaper())
        try:
            response = await run(
                create_app(short, services=services), "GET", "/api/projects/slow-sse", headers=auth
            )
        finally:
            streaming = False
            await running
        assert response.status_code == 200 and "[DONE]" in response.text
        assert reaped == 0
        state = await services.credits.status(created.account_id)
        assert state is not None
        assert (state.credits_remaining, state.total_tokens) == (99, 321)
    finally:
        services.db.dispose()


async def test_a_client_asking_for_gzip_still_gets_credit_info_and_true_tokens(
    settings: Settings, services: Services
) -> None:
    created = await create_account(services, tier="pro", months=1)
    headers = {"Authorization": f"Bearer {created.api_key}", "Accept-Encoding": "gzip"}
    response = await run(
        create_app(settings, services=services), "GET", "/api/projects/gzip-json", headers=headers
    )
    assert response.status_code == 200
    assert response.json()["creditInfo"]["tokensUsed"] == 7
    assert response.headers["x-tokens-used"] == "7"


async def test_a_reserve_that_fails_after_holding_gives_the_credit_back(
    settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis ran the script but the answer was lost: 503, and the hold is refunded at once."""
    created = await create_account(services, tier="pro", months=1)
    reserve = services.credits.reserve

    async def lost_answer(*args: Any, **kwargs: Any) -> Any:
        await reserve(*args, **kwargs)
        raise Unavailable("redis: connection lost before the reply")

    monkeypatch.setattr(services.credits, "reserve", lost_answer)
    auth = {"Authorization": f"Bearer {created.api_key}"}
    app = create_app(settings, services=services)
    response = await run(app, "POST", "/api/projects/x", headers=auth, content=b"{}")
    assert response.status_code == 503  # the lifespan's shutdown awaited the release
    state = await services.credits.status(created.account_id)
    assert state is not None and state.credits_remaining == 100


async def test_a_proxy_bug_is_json_500_and_the_hold_is_refunded(
    settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_account(services, tier="pro", months=1)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr("gateway.proxy.flow.signed_headers", broken)
    auth = {"Authorization": f"Bearer {created.api_key}"}
    app = create_app(settings, services=services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.post("/api/projects/x", headers=auth, content=b"{}")
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    state = await services.credits.status(created.account_id)
    assert state is not None and state.credits_remaining == 100


@pytest.mark.parametrize("told_by", ["server", "receive"])
async def test_a_client_gone_before_the_answer_is_refunded(
    settings: Settings, services: Services, gate: asyncio.Event, told_by: str
) -> None:
    """The server's ``CLIENT_GONE`` future (creditgate's own protocol) or, under another
    server, ``receive`` says the client left: the upstream call ends, nothing is answered, the
    hold is refunded."""
    created = await create_account(services, tier="pro", months=1)
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    auth = [(b"authorization", f"Bearer {created.api_key}".encode())]
    scope = http_scope("GET", b"/api/projects/gated", auth)
    if told_by == "server":
        scope["extensions"] = {CLIENT_GONE: {"future": gone}}
    left = asyncio.Event()  # with the server's future, never set: it alone tells
    receive = empty_body_then_gone(left)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def credits_left() -> int:
        state = await services.credits.status(created.account_id)
        assert state is not None
        return state.credits_remaining

    app = create_app(settings, services=services)
    try:
        async with app.router.lifespan_context(app):
            request = asyncio.ensure_future(app(scope, receive, send))
            for _ in range(200):
                if await credits_left() == 99:
                    break
                await asyncio.sleep(0.01)
            assert await credits_left() == 99
            if told_by == "server":
                gone.set_result(None)
            else:
                left.set()
            await asyncio.wait_for(request, 5)
    finally:
        gate.set()
    assert sent == []
    assert await credits_left() == 100


class DeadRedis:
    """A Redis that refuses every command, as a client does when Redis is down."""

    async def get(self, *args: object) -> None:
        raise RedisConnectionError("connection refused")

    async def ping(self) -> None:
        raise RedisConnectionError("connection refused")

    async def fcall(self, *args: object) -> None:
        raise RedisConnectionError("connection refused")

    async def aclose(self) -> None:
        return None


async def test_redis_outage_is_503_json(
    settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(holds, "DRAIN_TIMEOUT_S", 0.2)  # the release retries until shutdown
    created = await create_account(services, tier="pro", months=1)
    auth = {"Authorization": f"Bearer {created.api_key}"}
    down = open_services(settings, redis=DeadRedis())
    try:
        app = create_app(settings, services=down)
        response = await run(app, "POST", "/api/projects/x", headers=auth, content=b"{}")
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        usage = await run(app, "GET", "/api/user/usage", headers=auth)
        assert usage.status_code == 503
        assert usage.json()["error"] == "unavailable"
        ready = await run(app, "GET", "/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"].startswith("failed")
        metrics = await run(app, "GET", "/metrics")
        assert metrics.status_code == 200
        assert "creditgate_sync_" not in metrics.text
        # the reserve, the release of whatever it may have held (retried), the usage's status
        errors = series(metrics.text, "creditgate_redis_errors_total", "operation")
        assert errors.keys() == {("reserve",), ("refund",), ("status",)}
        assert errors[("reserve",)] == errors[("status",)] == 1
        assert errors[("refund",)] >= 1
    finally:
        down.db.dispose()
    state = await services.credits.status(created.account_id)
    assert state is not None and state.credits_remaining == 100


async def test_store_outage_on_an_uncached_key_is_503(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    broken = dataclasses.replace(settings, database_url=f"sqlite:///{tmp_path}/no/such/dir.db")
    down = open_services(broken, redis=services.redis)
    try:
        app = create_app(broken, services=down)
        response = await run(
            app, "GET", "/api/projects/x", headers={"Authorization": "Bearer cg_" + "k" * 43}
        )
    finally:
        down.db.dispose()
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"


async def test_unknown_path_is_json_404(settings: Settings, services: Services) -> None:
    response = await run(create_app(settings, services=services), "GET", "/nope")
    assert response.status_code == 404
    assert response.json() == {
        "success": False,
        "error": "not_found",
        "message": "no route for GET /nope",
    }


def test_serve_refuses_workers_on_the_embedded_redis(capsys: pytest.CaptureFixture[str]) -> None:
    class Args:
        workers = 2
        host = "127.0.0.1"
        port = 0
        access_log = False
        log_level = "INFO"

    assert serve(Args(), Settings.load(redis_url="embedded")) == 2  # type: ignore[arg-type]
    assert "CREDITGATE_REDIS_URL" in capsys.readouterr().err
