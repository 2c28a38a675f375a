"""One keep-alive connection to a backend and the answer it is reading (``upstream``'s parts).

``Connection`` is the asyncio protocol: it writes what ``upstream`` gives it and feeds the
bytes it receives to httptools' response parser (the C parser uvicorn uses), a parser per
request, into its current ``Answer``. ``Answer`` is what the proxy reads: the status and
headers once the head is in, then the body as it arrives, with flow control (past
``READ_HIGH`` bytes unread the socket stops being read) and the read timeout on every wait.
Its end decides the connection's fate: back to the pool (``Release``) when the body was read
to its end and the backend keeps it alive, else closed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import cast

import httptools

READ_HIGH = 262_144
"""Bytes of an answer received and not yet taken past which the socket is no longer read."""

RawHeaders = list[tuple[bytes, bytes]]
PoolKey = tuple[str, str, int]
"""A backend's scheme, host and port."""
Release = Callable[["Connection", bool], None]
"""Given back a connection done with its answer, and whether it may be used again."""


class UpstreamError(ConnectionError):
    """The backend's connection failed or broke, or its answer is not HTTP/1.1."""


class Connection(asyncio.Protocol):
    """One socket to a backend: writes requests, parses answers into its current ``Answer``."""

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        """The pool it belongs to."""
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
        "_release",
        "_queued",
        "_timeout",
        "_waiter",
        "interim",
        "keep_alive",
        "raw_headers",
        "status",
        "until_close",
    )

    def __init__(self, release: Release, conn: Connection, timeout: float, head_only: bool) -> None:
        self._release: Release | None = release
        self._conn: Connection | None = conn
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
        conn, release = self._conn, self._release
        if conn is None or release is None:
            return
        self._conn = self._release = None
        reusable = (
            self._done
            and self._error is None
            and self.keep_alive
            and not self.until_close
            and not self._chunks
            and self.status != 101
        )
        release(conn, reusable)

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
