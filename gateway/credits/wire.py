"""The credit scripts' own Redis connection: pipelined RESP written by hand, read by hiredis.

The gateway's hot path is two script calls per request, and through redis-py most of their
cost was Python around the wire: a pipeline object per batch, an encoder call per argument, a
connection checkout, a parser frame per reply (about a third of the gateway's CPU per
request, profiled under ``bench/proxy.py``). The batcher needs none of that: it writes one
loop turn's ``EVALSHA``s as one buffer on one connection and reads the replies in order.

For a plain Redis only (``redis://`` or ``unix://``): TLS, a Cluster and the embedded
fakeredis stay on redis-py, as does every other command (key lookups, admin, the sync
worker). A reply that does not come within ``reply_timeout`` closes the connection, failing
every call waiting on it; the next batch connects again. Nothing is ever re-sent: a call
that failed may or may not have run, and the engine's callers treat it so.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from redis import exceptions as rx
from redis.asyncio.connection import parse_url

CONNECT_TIMEOUT_S = 5.0
REPLY_TIMEOUT_S = 10.0

Reply = Any
"""What hiredis reads: str, int, None, a list of those, or a ``ResponseError``."""


def pack(*parts: object) -> bytes:
    """One command in RESP: an array of bulk strings (str as UTF-8, int as its digits)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if isinstance(part, str):
            data = part.encode()
        elif isinstance(part, bytes):
            data = part
        elif isinstance(part, int) and not isinstance(part, bool):
            data = b"%d" % part
        else:
            raise TypeError(f"a Redis argument must be str, bytes or int, not {type(part)!r}")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def pack_evalsha(sha: str, keys: Sequence[str], args: Sequence[object]) -> bytes:
    return pack("EVALSHA", sha, len(keys), *keys, *args)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and as whom to connect, read from a ``redis://`` or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Endpoint | None:
        """The endpoint, or None for a URL this connection does not speak (``rediss://``, or
        options such as timeouts that only redis-py would honour). Read by redis-py's own
        parser, so the scripts land in the same database as every other command."""
        if urlsplit(url).scheme not in ("redis", "unix"):
            return None
        found = parse_url(url)
        path = found.pop("path", None)
        found.pop("connection_class", None)
        if set(found) - {"host", "port", "db", "username", "password"}:
            return None
        return cls(
            host=found.get("host") or "127.0.0.1",
            port=int(found.get("port") or 6379),
            path=path,
            db=int(found.get("db") or 0),
            username=found.get("username"),
            password=found.get("password"),
        )


class _Protocol(asyncio.Protocol):
    """Matches replies to batches in the order the batches were written."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reply_timeout: float) -> None:
        self.loop = loop
        self.reply_timeout = reply_timeout
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=rx.ResponseError, encoding="utf-8")
        # (replies expected, replies so far, the batch's future, when it was written)
        self.waiting: collections.deque[tuple[int, list[Reply], asyncio.Future[list[Reply]], float]]
        self.waiting = collections.deque()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.watchdog: asyncio.TimerHandle | None = None

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, commands: list[bytes]) -> asyncio.Future[list[Reply]]:
        future: asyncio.Future[list[Reply]] = self.loop.create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_exception(rx.ConnectionError("the connection to Redis is closed"))
            return future
        self.transport.write(b"".join(commands))
        self.waiting.append((len(commands), [], future, self.loop.time()))
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(self.reply_timeout, self._check)
        return future

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while waiting:
            reply = self.reader.gets()
            if reply is False:
                return
            expected, replies, future, _ = waiting[0]
            if isinstance(reply, rx.ResponseError) and str(reply).startswith("NOSCRIPT"):
                reply = rx.NoScriptError(str(reply))
            replies.append(reply)
            if len(replies) == expected:
                waiting.popleft()
                if not future.done():
                    future.set_result(replies)

    def _check(self) -> None:
        self.watchdog = None
        if not self.waiting:
            return
        overdue = self.waiting[0][3] + self.reply_timeout - self.loop.time()
        if overdue <= 0:
            self._fail(rx.TimeoutError(f"no reply from Redis within {self.reply_timeout:g} s"))
            assert self.transport is not None
            self.transport.abort()
        else:
            self.watchdog = self.loop.call_later(overdue, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(rx.ConnectionError(f"the connection to Redis was lost: {exc or 'closed'}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        while self.waiting:
            *_, future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class Wire:
    """One pipelined connection to a plain Redis, opened at first use and after a loss.

    Batches are written in the order they were handed over, a reconnection included: while
    one waits for the connection, later ones queue behind it (``send_now`` declines).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        reply_timeout: float = REPLY_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self._protocol: _Protocol | None = None
        self._lock: asyncio.Lock | None = None
        self._queued = 0
        self._closed = False

    @classmethod
    def for_url(cls, url: str) -> Wire | None:
        endpoint = Endpoint.parse(url)
        return None if endpoint is None else cls(endpoint)

    def send_now(self, commands: list[bytes]) -> asyncio.Future[list[Reply]] | None:
        """``execute`` without a coroutine when connected and nothing queues (the hot path);
        None otherwise."""
        protocol = self._protocol
        if self._queued or protocol is None or not protocol.usable:
            return None
        return protocol.send(commands)

    async def execute(self, commands: list[bytes]) -> list[Reply]:
        """Write packed commands as one buffer; their replies in order (errors as values).

        Raises ``redis.exceptions.ConnectionError`` / ``TimeoutError`` when the connection
        fails before every reply is read.
        """
        sent = self.send_now(commands)
        if sent is None:
            self._queued += 1
            try:
                protocol = await self._connected()
                sent = protocol.send(commands)  # before the next in line: the lock is FIFO
            finally:
                self._queued -= 1
        return await sent

    async def _connected(self) -> _Protocol:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._closed:
                raise rx.ConnectionError("the engine's Redis connection is closed")
            if self._protocol is None or not self._protocol.usable:
                self._protocol = await self._connect()
            return self._protocol

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if ep.path is not None:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(loop, self.reply_timeout), ep.path
                    )
                else:
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(loop, self.reply_timeout), ep.host, ep.port
                    )
                await self._handshake(protocol)
        except BaseException as exc:
            if protocol is not None and protocol.transport is not None:
                protocol.transport.close()
            if isinstance(exc, OSError | TimeoutError):
                raise rx.ConnectionError(f"cannot connect to Redis: {exc}") from exc
            raise
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        commands = []
        if self.endpoint.password is not None:
            auth = (self.endpoint.username, self.endpoint.password)
            commands.append(pack("AUTH", *[p for p in auth if p is not None]))
        if self.endpoint.db:
            commands.append(pack("SELECT", self.endpoint.db))
        if not commands:
            return
        for reply in await protocol.send(commands):
            if isinstance(reply, Exception):
                raise rx.ConnectionError(f"Redis refused the connection's setup: {reply}")

    async def aclose(self) -> None:
        """Close the connection; later calls fail rather than connect again."""
        self._closed = True
        if self._lock is not None:
            async with self._lock:  # a connection being opened is closed too
                pass
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            await protocol.closed
