"""Fixtures of the proxy's in-process tests: an aiohttp stub backend in the test's own loop,
and settings and services on the real Redis and a fresh SQLite store.

The stub answers by the path's end: ``/slow-sse`` (twelve SSE events 0.25 s apart, then
usage 321), ``/quick-sse`` (one event, then usage 5, at once), ``/gzip-json`` (usage 7,
compressed when asked), ``/chunked-json`` (usage 88, chunked), ``/status?code=`` (that
status), ``/gated`` (waits for the ``gate`` event), anything else: the size and method of the
request's body, as JSON without usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from gateway.services import Services, open_services
from gateway.settings import Route, Settings
from tests.support.stores import in_process_settings
from tests.support.stubs import serving


@pytest.fixture
def gate() -> asyncio.Event:
    """What the stub's ``/gated`` requests wait for before they answer."""
    return asyncio.Event()


@pytest.fixture
async def stub(gate: asyncio.Event) -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.endswith("/status"):
            return web.json_response({"error": "as asked"}, status=int(request.query["code"]))
        if request.path.endswith("/gated"):
            await asyncio.wait_for(gate.wait(), 10)
        if request.path.endswith("/slow-sse"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for i in range(12):
                await response.write(f'data: {{"index": {i}}}\n\n'.encode())
                await asyncio.sleep(0.25)
            await response.write(b'data: {"usage": {"total_tokens": 321}}\n\ndata: [DONE]\n\n')
            await response.write_eof()
            return response
        if request.path.endswith("/quick-sse"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b'data: {"index": 0}\n\n')
            await response.write(b'data: {"usage": {"total_tokens": 5}}\n\ndata: [DONE]\n\n')
            await response.write_eof()
            return response
        if request.path.endswith("/gzip-json"):
            response = web.json_response({"usage": {"total_tokens": 7}})
            response.enable_compression()  # only when the request accepts gzip
            return response
        if request.path.endswith("/chunked-json"):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b'{"usage": {"total_tokens": ')
            await response.write(b"88}}")
            await response.write_eof()
            return response
        return web.json_response({"size": len(body), "method": request.method})

    async with serving(echo, client_max_size=16 * 1024 * 1024) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, stub: str) -> Settings:
    return in_process_settings(
        tmp_path, redis_url, routes=[Route(prefix="/api/projects/", upstream=stub)]
    )


@pytest.fixture
async def services(settings: Settings, real_redis: aioredis.Redis) -> AsyncIterator[Services]:
    svc = open_services(settings, redis=real_redis)
    yield svc
    svc.db.dispose()
