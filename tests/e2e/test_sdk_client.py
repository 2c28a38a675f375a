"""A client written by someone else: the ``openai`` SDK through a real gateway process.

The gateway runs as ``creditgate serve`` on a real Redis, with the demo's TOML route ``/v1/``
(``errors = "openai"``, ``pricing = "tokens"``) to the demo codegen app (which answers
``.../chat/completions`` in OpenAI's shape, its usage growing with the prompt) running in the
test's loop so it can count the calls that reach it. The account's tier holds 6 credits: a
plain and a streamed completion of a long prompt pass, each charged the 3 credits of its
tokens; the third is refused with 429 ``insufficient_credits``, which the SDK must raise as
``RateLimitError`` showing the gateway's message and OpenAI's ``insufficient_quota`` code,
without retrying, because the gateway says ``X-Should-Retry: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.accounts.operations import create_account
from gateway.demo.backends import codegen_app
from gateway.services import open_services
from store.database import upgrade
from tests.support.gateways import settings_of, start_replica, stop_procs, wait_ready
from tests.support.processes import creditgate_env

pytestmark = pytest.mark.slow

SECRET = "sdk-test-signing-secret"
START_TIMEOUT_S = 30.0
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "write hello world"}
]
LONG: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "write hello world " * 330}
]
"""A prompt the demo backend answers with 4000 to 6000 tokens of usage: 3 credits."""


class CountingApp:
    """Counts the HTTP requests that reach the wrapped backend."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """``app`` under uvicorn in this test's loop, on a free port: yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            assert not task.done() and time.monotonic() < deadline, "server did not start"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, CountingApp]]:
    app = CountingApp(codegen_app(SECRET.encode()))
    async with serving(app) as url:
        yield url, app


@dataclass(frozen=True, slots=True)
class Gateway:
    url: str
    env: dict[str, str]


@pytest.fixture
def gateway_env(tmp_path: Path, redis_url: str, backend: tuple[str, CountingApp]) -> dict[str, str]:
    config = tmp_path / "creditgate.toml"
    config.write_text(
        "[tiers.six]\ncredits = 6\nrequests_per_minute = 0\n\n"
        f'[[routes]]\nprefix = "/v1/"\nupstream = "{backend[0]}"\ncost = 1\nerrors = "openai"\n'
        'pricing = "tokens"\nmax_credits = 10\n',
        encoding="utf-8",
    )
    return {
        "CREDITGATE_REDIS_URL": redis_url,
        "CREDITGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CREDITGATE_CONFIG": str(config),
        "CREDITGATE_SIGNING_SECRET": SECRET,
    }


@pytest.fixture
def gateway(
    gateway_env: dict[str, str], real_redis: aioredis.Redis, tmp_path: Path
) -> Iterator[Gateway]:
    """``creditgate serve`` in its own process on a free port; stopped at teardown."""
    upgrade(gateway_env["CREDITGATE_DATABASE_URL"])
    url, proc, log = start_replica(creditgate_env(gateway_env), tmp_path, "gateway.log")
    try:
        wait_ready(url, proc, log)
        yield Gateway(url, gateway_env)
    finally:
        stop_procs([proc])


async def _api_key(env: dict[str, str]) -> str:
    services = open_services(settings_of(env))
    try:
        created = await create_account(services, tier="six", reason="test")
    finally:
        await services.close()
    assert created.state.credits_remaining == 6
    return created.api_key


def _client(base_url: str, api_key: str, sent: list[str]) -> openai.AsyncOpenAI:
    """An SDK client with its default retries, recording every request it sends."""

    async def count(request: Any) -> None:  # the SDK's own httpx flavour
        sent.append(request.url.path)

    http_client = openai.DefaultAsyncHttpxClient(event_hooks={"request": [count]})
    return openai.AsyncOpenAI(
        api_key=api_key, base_url=base_url, max_retries=2, http_client=http_client
    )


async def _wait_charged(url: str, api_key: str, tokens: int) -> None:
    """Until the settles have landed: all 6 credits charged, for ``tokens`` tokens."""
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(base_url=url) as http:
        while True:
            answer = await http.get(
                "/api/user/usage", headers={"Authorization": f"Bearer {api_key}"}
            )
            usage = answer.json()["usage"]
            if usage["totalTokensUsed"] == tokens:
                assert usage["creditsRemaining"] == 0
                return
            assert time.monotonic() < deadline, usage
            await asyncio.sleep(0.05)


async def test_sdk_sees_insufficient_credits_and_does_not_retry(
    gateway: Gateway, backend: tuple[str, CountingApp]
) -> None:
    sent: list[str] = []
    api_key = await _api_key(gateway.env)
    client = _client(f"{gateway.url}/v1", api_key, sent)
    async with client:
        raw = await client.chat.completions.with_raw_response.create(model="demo", messages=LONG)
        completion = raw.parse()
        assert completion.choices[0].message.role == "assistant"
        assert completion.usage is not None
        assert 4000 < completion.usage.total_tokens <= 6000  # 3 credits' worth
        assert raw.headers["x-credits-charged"] == "3"

        stream = await client.chat.completions.create(
            model="demo", messages=LONG, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None
        assert 4000 < chunks[-1].usage.total_tokens <= 6000
        assert backend[1].calls == 2
        tokens = completion.usage.total_tokens + chunks[-1].usage.total_tokens
        await _wait_charged(gateway.url, api_key, tokens)

        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="demo", messages=MESSAGES)

    error = refused.value
    message = "this request costs more than the 0 credits left"
    assert message in str(error)  # what the SDK shows, not just "Error code: 429"
    assert (error.code, error.type) == ("insufficient_quota", "insufficient_quota")
    answer = error.response
    assert answer.status_code == 429
    assert answer.headers["x-should-retry"] == "false"
    assert answer.json()["creditInfo"]["creditsRemaining"] == 0
    assert sent == ["/v1/chat/completions"] * 3  # the refused call was sent once
    assert backend[1].calls == 2  # and never reached the backend


async def test_sdk_sees_an_unknown_key_as_authentication_error(gateway: Gateway) -> None:
    sent: list[str] = []
    async with _client(f"{gateway.url}/v1", "cg_" + "u" * 43, sent) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model="demo", messages=MESSAGES)
    assert refused.value.code == "invalid_api_key"
    assert "unknown" in str(refused.value) or "key" in str(refused.value)
    assert sent == ["/v1/chat/completions"]


async def test_the_sdk_would_retry_a_429_without_the_header() -> None:
    """The control: the single call above is the gateway's header, not the SDK's default."""

    async def refuse(request: Request) -> JSONResponse:
        body = {"success": False, "error": "insufficient_credits", "message": "no credits"}
        return JSONResponse(body, status_code=429, headers={"retry-after-ms": "1"})

    app = CountingApp(Starlette(routes=[Route("/v1/chat/completions", refuse, methods=["POST"])]))
    sent: list[str] = []
    async with serving(app) as url, _client(f"{url}/v1", "cg_x", sent) as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="demo", messages=MESSAGES)
    assert app.calls == len(sent) == 3
