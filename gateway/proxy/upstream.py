"""The HTTP/1.1 client to the backends: pooled keep-alive connections, one pool per process.

Hand-written on asyncio's protocols with httptools' response parser (the C parser uvicorn
uses) because the general-purpose client cost what matters: with aiohttp the client took
about a third of a worker's CPU per proxied request (issue 16, ``bench/proxy.py``). It does
only what a gateway's hop to its backends needs:

- the request's head written in one piece with its body when that is buffered; a streamed
  body goes out chunked, paced by the socket's write buffer;
- the answer's head parsed, its body handed over as it arrives (``connection.Answer``) with
  flow control;
- bodies untouched: no decompression, no redirects, no cookies, no header the caller did
  not give but ``Host`` and the framing;
- keep-alive: a connection read to the end of a reusable answer goes back to its origin's
  pool (newest first), idle ones past ``KEEPALIVE_S`` or closed by the backend are dropped
  when met; at most ``LIMIT_PER_ORIGIN`` connections an origin, further requests wait;
- timeouts: connecting (``CONNECT_TIMEOUT_S``) and each wait for the backend, the answer's
  head and every wait for its body or for its socket to take the request
  (``read_timeout``): ``TimeoutError`` (504). No total timeout: a long stream that keeps
  sending is never cut;
- a connection that fails or breaks, an answer that is not HTTP: ``UpstreamError``, an
  ``OSError`` (502).

A request that is cancelled (its client gone) or fails midway closes its connection: only a
connection whose answer was read to its end is used again.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.proxy.connection import Answer, Connection, PoolKey, UpstreamError
from gateway.settings import check_upstream

LIMIT_PER_ORIGIN = 256
"""Open connections to one backend (scheme, host and port)."""
KEEPALIVE_S = 30.0
"""An idle connection older than this is closed rather than used again."""
CONNECT_TIMEOUT_S = 5.0
WRITE_CHUNK = 65_536
"""A buffered body larger than this is written apart from the head (not copied into it)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a route's requests go: the pool's key, and the path its targets start with."""

    scheme: str
    host: str
    port: int
    base: str
    """The upstream URL's path (no trailing ``/``), put before each request's path."""
    host_header: bytes

    @property
    def key(self) -> PoolKey:
        return (self.scheme, self.host, self.port)

    @classmethod
    def parse(cls, url: str) -> Origin:
        """The origin of a URL the settings checked (``gateway.settings.check_upstream``)."""
        parts = urlsplit(check_upstream(url))
        assert parts.hostname is not None
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        if port != default:
            shown += f":{port}"
        return cls(parts.scheme, host, port, parts.path.rstrip("/"), shown.encode("idna"))


class _Pool:
    """One origin's connections: the idle ones, newest last, and the count of all open."""

    __slots__ = ("idle", "open", "waiting")

    def __init__(self) -> None:
        self.idle: deque[Connection] = deque()
        self.open = 0
        self.waiting: deque[asyncio.Future[None]] = deque()


class Upstream:
    """The process's client to every backend (built by the app's lifespan, closed at its end)."""

    def __init__(self, *, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        self._pools: dict[PoolKey, _Pool] = {}
        self._origins: dict[str, Origin] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    def origin(self, url: str) -> Origin:
        """``url``'s origin, parsed once."""
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = Origin.parse(url)
        return origin

    async def request(
        self,
        method: str,
        origin: Origin,
        target: str,
        headers: list[tuple[str, str]],
        data: bytes | AsyncIterator[bytes],
    ) -> Answer:
        """Send a request to ``origin`` (``target``: its path and query, after the origin's
        base) and wait for the answer's head."""
        conn = await self._acquire(origin)
        answer = Answer(self.release, conn, self.read_timeout, head_only=method == "HEAD")
        conn.begin(answer)
        try:
            head = _head(method, origin, target, headers, data)
            if isinstance(data, bytes):
                if len(data) > WRITE_CHUNK:
                    conn.write(head)
                    conn.write(data)
                else:
                    conn.write(head + data)
            else:
                conn.write(head)
                await self._send_chunked(conn, data)
            await answer.head()
        except BaseException:
            answer.close()  # cancelled (the client gone) or failed: this connection is closed
            raise
        return answer

    async def _send_chunked(self, conn: Connection, data: AsyncIterator[bytes]) -> None:
        async for chunk in data:
            if chunk:
                await conn.writable(self.read_timeout)
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        await conn.writable(self.read_timeout)
        conn.write(b"0\r\n\r\n")

    # -- the pool --------------------------------------------------------------------------

    async def _acquire(self, origin: Origin) -> Connection:
        if self._closed:
            raise UpstreamError("the gateway is shutting down")
        pool = self._pools.get(origin.key)
        if pool is None:
            pool = self._pools[origin.key] = _Pool()
        while True:
            now = time.monotonic()
            while pool.idle:
                conn = pool.idle.pop()
                if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                    return conn
                pool.open -= 1
                conn.abort()
            if pool.open < LIMIT_PER_ORIGIN:
                break
            waiter = asyncio.get_running_loop().create_future()
            pool.waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one(pool)  # woken, then cancelled: the turn goes to the next
                else:
                    pool.waiting.remove(waiter)
                raise
        pool.open += 1
        try:
            return await self._connect(origin)
        except BaseException:
            pool.open -= 1
            self._wake_one(pool)
            raise

    async def _connect(self, origin: Origin) -> Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, conn = await loop.create_connection(
                lambda: Connection(origin.key),
                origin.host,
                origin.port,
                ssl=tls,
                server_hostname=origin.host if tls is not None else None,
            )
        return conn

    def release(self, conn: Connection, reusable: bool) -> None:
        """``conn`` is done with its answer: idle again if ``reusable``, else gone."""
        pool = self._pools.get(conn.key)
        if pool is None:
            conn.abort()
            return
        if reusable and not conn.closed and not self._closed:
            conn.idle_since = time.monotonic()
            pool.idle.append(conn)
        else:
            pool.open -= 1
            conn.abort()
        self._wake_one(pool)

    @staticmethod
    def _wake_one(pool: _Pool) -> None:
        while pool.waiting:
            waiter = pool.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close every idle connection; those in use close when their answer is done."""
        self._closed = True
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().abort()
                pool.open -= 1


def _head(
    method: str,
    origin: Origin,
    target: str,
    headers: list[tuple[str, str]],
    data: bytes | AsyncIterator[bytes],
) -> bytes:
    """The request line and headers, with ``Host`` and the body's framing."""
    lines = [f"{method} {origin.base}{target} HTTP/1.1".encode("latin-1")]
    lines.append(b"Host: " + origin.host_header)
    for name, value in headers:
        lines.append(f"{name}: {value}".encode("latin-1"))
    if isinstance(data, bytes):
        if data or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(b"Content-Length: %d" % len(data))
    else:
        lines.append(b"Transfer-Encoding: chunked")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)
