"""The HTTP/1.1 client to the backends: pooled keep-alive connections, one pool per process.

Hand-written on asyncio's protocols with httptools' response parser (the C parser uvicorn
uses) because the general-purpose client cost what matters: with aiohttp the client took
about a third of a worker's CPU per proxied request (issue 16, ``bench/proxy.py``). It does
only what a gateway's hop to its backends needs:

- the request's head written in one piece with its body when that is buffered; a streamed
  body goes out chunked, paced by the socket's write buffer;
- the answer's head parsed, its body handed over as it arrives (``Answer.chunks``) with
  flow control: past ``READ_HIGH`` bytes unread the socket stops being read;
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
from typing import cast
from urllib.parse import urlsplit

import httptools

from gateway.settings import check_upstream

LIMIT_PER_ORIGIN = 256
"""Open connections to one backend (scheme, host and port)."""
KEEPALIVE_S = 30.0
"""An idle connection older than this is closed rather than used again."""
CONNECT_TIMEOUT_S = 5.0
READ_HIGH = 262_144
"""Bytes of an answer received and not yet taken past which the socket is no longer read."""
WRITE_CHUNK = 65_536
"""A buffered body larger than this is written apart from the head (not copied into it)."""

RawHeaders = list[tuple[bytes, bytes]]


class UpstreamError(ConnectionError):
    """The backend's connection failed or broke, or its answer is not HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a route's requests go: the pool's key, and the path its targets start with."""

    scheme: str
    host: str
    port: int
    base: str
    """The upstream URL's path (no trailing ``/``), put before each request's path."""
    host_header: bytes

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


class _Connection(asyncio.Protocol):
    """One socket to a backend: writes requests, parses answers into its current ``Answer``."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.answer: Answer | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.closed = False
        self.idle_since = 0.0
        self._writable: asyncio.Future[None] | None = None
        self._paused_writing = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        parser, answer = self.parser, self.answer
        if parser is None or answer is None:
            self.abort()  # bytes no request asked for: this connection cannot be trusted
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            answer.finish()  # a 101's head is complete; what follows is not HTTP
        except httptools.HttpParserError as exc:
            answer.fail(UpstreamError(f"the backend's answer is not HTTP/1.1: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close the transport: a half-closed backend connection is of no use

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = None
        answer, self.answer = self.answer, None
        if answer is not None:
            if exc is None and answer.until_close and answer.status:
                answer.finish()  # an answer framed by the connection's end
            else:
                answer.fail(UpstreamError("the backend closed the connection"))
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_exception(UpstreamError("the backend closed the connection"))

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # -- httptools' callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.answer is None:  # an answer after the answer: the backend is out of step
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.answer is not None:
            self.answer.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        answer, parser = self.answer, self.parser
        if answer is None or parser is None:
            return
        answer.head_complete(parser.get_status_code(), parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.answer is not None:
            self.answer.feed(body)

    def on_message_complete(self) -> None:
        answer = self.answer
        if answer is None:
            return
        if answer.interim:  # a 1xx before the answer: its head is forgotten, the parser goes on
            answer.interim = False
            answer.raw_headers = []
            return
        answer.finish()

    # -- use -------------------------------------------------------------------------------

    def begin(self, answer: Answer) -> None:
        """Make ``answer`` the one the next bytes belong to, with a parser of its own."""
        self.answer = answer
        self.parser = httptools.HttpResponseParser(self)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def writable(self, timeout: float) -> None:
        """Wait until the socket takes more (``timeout``: the backend stopped reading)."""
        if self.closed:
            raise UpstreamError("the backend closed the connection")
        if not self._paused_writing:
            return
        waiter = self._writable = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(timeout):
            await waiter

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class Answer:
    """The backend's answer: status and headers once its head is read, then its body.

    Use it as an async context manager (or call ``close``): at the end its connection goes
    back to the pool when the body was read to its end, and is closed otherwise.
    """

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_loop",
        "_pool",
        "_queued",
        "_timeout",
        "_waiter",
        "interim",
        "keep_alive",
        "raw_headers",
        "status",
        "until_close",
    )

    def __init__(self, pool: Upstream, conn: _Connection, timeout: float, head_only: bool) -> None:
        self._pool: Upstream | None = pool
        self._conn: _Connection | None = conn
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.raw_headers: RawHeaders = []
        self.keep_alive = False
        self.interim = False
        self.until_close = head_only  # (until the head is read: whether there is no body)

    # -- fed by the connection -------------------------------------------------------------

    def head_complete(self, status: int, keep_alive: bool) -> None:
        if 100 <= status < 200 and status != 101:
            self.interim = True
            return
        head_only = self.until_close
        self.status, self.keep_alive = status, keep_alive
        self.until_close = not head_only and not _framed(self.raw_headers, status)
        self._wake()
        if head_only:
            self.finish()  # an answer to HEAD: whatever its headers say, no body follows

    def feed(self, body: bytes) -> None:
        self._chunks.append(body)
        self._queued += len(body)
        if self._queued > READ_HIGH and self._conn is not None:
            self._conn.pause_reading()
        self._wake()

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn is not None:
            conn.answer = None
            conn.parser = None
        self._wake()

    def fail(self, error: BaseException) -> None:
        if self._done:
            return
        self._done, self._error = True, error
        conn = self._conn
        if conn is not None:
            conn.answer = None
            conn.parser = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- read by the caller ----------------------------------------------------------------

    async def _wait(self) -> None:
        """Until the connection brings something, for at most the read timeout."""
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(self._timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def head(self) -> None:
        """Wait for the answer's status and headers."""
        while not self.status:
            if self._error is not None:
                raise self._error
            if self._done:
                raise UpstreamError("the backend closed the connection before its answer")
            await self._wait()

    @property
    def content_type(self) -> str | None:
        """The ``Content-Type`` header's media type, lower case (None without one)."""
        for name, value in self.raw_headers:
            if name.lower() == b"content-type":
                return value.split(b";", 1)[0].strip().lower().decode("latin-1")
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the pieces it came in."""
        conn = self._conn
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._queued -= len(chunk)
                if self._queued <= READ_HIGH and conn is not None:
                    conn.resume_reading()
                yield chunk
            elif self._error is not None:
                raise self._error
            elif self._done:
                return
            else:
                await self._wait()

    async def read(self) -> bytes:
        """The whole body (the caller bounds it: a Content-Length it checked, or ``chunks``)."""
        parts = [chunk async for chunk in self.chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Done with the answer: its connection back to the pool if the body was read to its
        end and the backend keeps it alive, else closed."""
        conn, pool = self._conn, self._pool
        if conn is None or pool is None:
            return
        self._conn = self._pool = None
        reusable = (
            self._done
            and self._error is None
            and self.keep_alive
            and not self.until_close
            and not self._chunks
            and self.status != 101
        )
        pool.release(conn, reusable)

    async def __aenter__(self) -> Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("the backend did not answer in time"))


def _framed(headers: RawHeaders, status: int) -> bool:
    """Whether the answer's end is known from its head (no body, a length or chunks) rather
    than the connection's close."""
    if status in (204, 304):
        return True
    for name, _ in headers:
        lower = name.lower()
        if lower in (b"content-length", b"transfer-encoding"):
            return True
    return False


class _Pool:
    """One origin's connections: the idle ones, newest last, and the count of all open."""

    __slots__ = ("idle", "open", "waiting")

    def __init__(self) -> None:
        self.idle: deque[_Connection] = deque()
        self.open = 0
        self.waiting: deque[asyncio.Future[None]] = deque()


class Upstream:
    """The process's client to every backend (built by the app's lifespan, closed at its end)."""

    def __init__(self, *, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        self._pools: dict[tuple[str, str, int], _Pool] = {}
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
        answer = Answer(self, conn, self.read_timeout, head_only=method == "HEAD")
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

    async def _send_chunked(self, conn: _Connection, data: AsyncIterator[bytes]) -> None:
        async for chunk in data:
            if chunk:
                await conn.writable(self.read_timeout)
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        await conn.writable(self.read_timeout)
        conn.write(b"0\r\n\r\n")

    # -- the pool --------------------------------------------------------------------------

    async def _acquire(self, origin: Origin) -> _Connection:
        if self._closed:
            raise UpstreamError("the gateway is shutting down")
        key = (origin.scheme, origin.host, origin.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool()
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

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, conn = await loop.create_connection(
                lambda: _Connection(origin),
                origin.host,
                origin.port,
                ssl=tls,
                server_hostname=origin.host if tls is not None else None,
            )
        return conn

    def release(self, conn: _Connection, reusable: bool) -> None:
        """``conn`` is done with its answer: idle again if ``reusable``, else gone."""
        pool = self._pools.get((conn.origin.scheme, conn.origin.host, conn.origin.port))
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
