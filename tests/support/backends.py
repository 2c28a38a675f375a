"""A stub backend for in-process tests: an aiohttp server on a free loopback port whose every
path is answered by one handler."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def stub_backend(answer: Handler, *, max_body: int = 1024**2) -> AsyncIterator[str]:
    """Serve ``answer`` for every method and path; yields the base URL."""
    app = web.Application(client_max_size=max_body)
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
