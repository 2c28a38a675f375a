"""A backend that records the headers it receives, and the app served in-process to httpx.

For tests of what the proxy sends and says about a request (headers, logs, spans) without a
server process: ``recording_backend()`` runs an aiohttp app on a free port of this loop;
``gateway_client(app)`` runs the app's lifespan and gives an httpx client bound to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from aiohttp import web
from starlette.applications import Starlette

TOKENS = 7
"""The ``usage.total_tokens`` of the recording backend's 2xx JSON answers."""


@dataclass
class Recording:
    """The backend's URL and the headers (lower-case names) of each request, in order."""

    url: str = ""
    seen: list[dict[str, str]] = field(default_factory=list)


@asynccontextmanager
async def recording_backend() -> AsyncIterator[Recording]:
    """Answers ``.../status/<code>`` with that status, anything else 200 JSON with usage."""
    recording = Recording()

    async def answer(request: web.Request) -> web.Response:
        recording.seen.append({k.lower(): v for k, v in request.headers.items()})
        head, _, code = request.path.rstrip("/").rpartition("/")
        if head.endswith("/status"):
            return web.json_response({"error": "as asked"}, status=int(code))
        return web.json_response({"usage": {"total_tokens": TOKENS}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recording.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield recording
    finally:
        await runner.cleanup()


@asynccontextmanager
async def gateway_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of ``app``, inside its lifespan (started and stopped around)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client
