"""The proof's misbehaving backend: an aiohttp server in a thread of its own that keeps its own
log of every request it served, by the gateway's request id.

It answers by the path's last segment (under any route prefix):

- ``json``: a JSON object with ``usage.total_tokens`` (``?tokens=``, default 1500);
  ``?delay=`` seconds first;
- ``sse``: ``?events=`` events ``?gap=`` seconds apart, then a usage event (``?tokens=``,
  default 2500) and ``[DONE]``;
- ``fail``: ``?code=`` (a JSON error with that status);
- ``break``: a 2xx SSE stream whose connection is cut after the first event;
- ``hang``: waits far past the gateway's upstream timeout.

``slow`` (set by the fault injector) adds that many seconds before every answer.

The log (``Served``) is the backend's own truth: the status it began to answer with, and
whether it finished writing the answer (``done``), the tokens it reported (``tokens``: None
until the answer carrying them was written, so a broken or abandoned stream reports none); a
request the gateway gave up on (its
client left, its replica was killed, its timeout passed) is logged with ``done`` False.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web


@dataclass
class Served:
    request_id: str
    account: str
    path: str
    status: int = 0
    """The status the backend began to answer with; 0: it never began."""
    done: bool = False
    """The answer was written to its last byte (a ``break`` is never done)."""
    at: float = 0.0
    tokens: int | None = None
    """The ``usage.total_tokens`` it sent (None: no usage went out)."""


class Backend:
    """Start with ``start()`` (returns the URL), stop with ``stop()``; ``log`` by request id."""

    def __init__(self) -> None:
        self.log: dict[str, list[Served]] = {}
        self.unsigned = 0
        """Requests without an ``X-Gateway-Request-Id``: the gateway always sends one."""
        self.slow = 0.0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    def start(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self.url

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def stop(self) -> None:
        if self._runner is not None:
            cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(TimeoutError):
                cleanup.result(10)
            # Handlers still waiting (``hang``) end here, not as tasks destroyed pending.
            asyncio.run_coroutine_threadsafe(self._cancel_rest(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @staticmethod
    async def _cancel_rest() -> None:
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def records(self) -> dict[str, list[Served]]:
        with self._lock:
            return {rid: list(served) for rid, served in self.log.items()}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer as the path asks; a gateway gone mid-answer leaves ``done`` False."""
        try:
            return await self._answer(request)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            raise web.HTTPServiceUnavailable() from None

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        rid = request.headers.get("X-Gateway-Request-Id")
        if rid is None:
            self.unsigned += 1
            return web.json_response({"error": "unsigned"}, status=400)
        served = Served(rid, request.headers.get("X-Gateway-Account", ""), request.path)
        served.at = time.monotonic()
        with self._lock:
            self.log.setdefault(rid, []).append(served)
        if self.slow:
            await asyncio.sleep(self.slow)
        what = request.path.rstrip("/").rsplit("/", 1)[-1]
        query = request.query
        if what == "fail":
            served.status = int(query.get("code", "500"))
            response = web.json_response({"error": "as asked"}, status=served.status)
            return await self._finish(request, response, served)
        if what == "hang":
            await asyncio.sleep(60)
        if what in ("sse", "break"):
            return await self._stream(request, served, what == "break")
        await asyncio.sleep(float(query.get("delay", "0")))
        served.status = 200
        served.tokens = int(query.get("tokens", "1500"))
        body = {"answer": "ok", "usage": {"total_tokens": served.tokens}}
        return await self._finish(request, web.json_response(body), served)

    async def _finish(
        self, request: web.Request, response: web.Response, served: Served
    ) -> web.StreamResponse:
        await response.prepare(request)
        await response.write_eof()
        served.done = True
        return response

    async def _stream(self, request: web.Request, served: Served, cut: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        served.status = 200
        await response.prepare(request)
        await response.write(b'data: {"delta": "first"}\n\n')
        if cut:
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()
            return response
        for i in range(int(request.query.get("events", "3"))):
            await asyncio.sleep(float(request.query.get("gap", "0.05")))
            await response.write(f'data: {{"delta": "{i}"}}\n\n'.encode())
        tokens = int(request.query.get("tokens", "2500"))
        await response.write(f'data: {{"usage": {{"total_tokens": {tokens}}}}}\n\n'.encode())
        served.tokens = tokens
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        served.done = True
        return response
