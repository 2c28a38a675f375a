"""The credit scripts' own Redis connection: pipelined RESP written by hand, read by hiredis.

The gateway's hot path is two script calls per request, and through redis-py most of their
cost was Python around the wire: a pipeline object per batch, an encoder call per argument, a
connection checkout, a parser frame per reply (about a third of the gateway's CPU per
request, profiled under ``bench/proxy.py``). The batcher needs none of that: it writes one
loop turn's ``FCALL``s as one buffer on one connection and reads the replies in order, each
batch's handed to a callback as soon as they are read (``send_now``), with no future and no
loop turn in between.

For a plain Redis only (``redis://`` or ``unix://``): TLS, a Cluster and the embedded
fakeredis stay on redis-py, as does every other command (key lookups, admin, the sync
worker). A reply that does not come within ``reply_timeout`` closes the connection, failing
every call waiting on it; the next batch connects again. Nothing is ever re-sent: a call
that failed may or may not have run, and the engine's callers treat it so.

Every connection starts with a ``PING`` (after ``AUTH`` and ``SELECT``), so a server that is not
Redis (a wrong port) fails the connection at once; bytes that are not RESP fail it too, as a
``ConnectionError`` rather than a parser traceback per call. Each failure streak is logged
once, and the recovery once. An idle connection is pinged every ``HEALTH_CHECK_S`` (and has TCP
keep-alive), so one that a firewall or Redis dropped is found before a request needs it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from redis import exceptions as rx
from redis.asyncio.connection import parse_url

log = logging.getLogger("creditgate.redis")

CONNECT_TIMEOUT_S = 5.0
REPLY_TIMEOUT_S = 10.0
HEALTH_CHECK_S = 30.0

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


def pack_fcall(function: str, keys: Sequence[str], args: Sequence[object]) -> bytes:
    """``pack("FCALL", function, len(keys), *keys, *args)``, the hot path's way: two script calls
    a request, some twenty arguments each. The command's head is packed once per script and
    shape; arguments that are all ASCII ``str`` or ``int`` (as the engine's are) are written
    as one text, encoded once. Anything else goes through ``pack``, which says what is wrong."""
    bulks = []
    for part in (*keys, *args):
        cls = part.__class__
        if cls is not str and cls is not int:  # bool too: its class is bool
            return pack("FCALL", function, len(keys), *keys, *args)
        text = str(part)
        bulks.append(f"${len(text)}\r\n{text}\r\n")
    joined = "".join(bulks)
    if not joined.isascii():  # lengths are of UTF-8 bytes, and a lone surrogate must fail
        return pack("FCALL", function, len(keys), *keys, *args)
    return _fcall_head(function, len(keys), len(bulks)) + joined.encode()


@functools.lru_cache(maxsize=64)
def _fcall_head(function: str, keys: int, parts: int) -> bytes:
    """What every ``FCALL`` of one function with this many keys and arguments starts with."""
    return b"*%d\r\n" % (3 + parts) + pack("FCALL", function, keys).removeprefix(b"*3\r\n")


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

    def __init__(
        self, loop: asyncio.AbstractEventLoop, reply_timeout: float, health_check: float
    ) -> None:
        self.loop = loop
        self.reply_timeout = reply_timeout
        self.health_check = health_check
        self.last_write = loop.time()
        self.pinger: asyncio.TimerHandle | None = None
        self.broken: Exception | None = None
        """Why the connection failed on our side (not Redis speaking), for the log."""
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=rx.ResponseError, encoding="utf-8")
        # (replies expected, replies so far, who takes them, when the batch was written)
        self.waiting: collections.deque[tuple[int, list[Reply], Then, float]]
        self.waiting = collections.deque()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.watchdog: asyncio.TimerHandle | None = None

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.pinger = self.loop.call_later(self.health_check, self._ping_if_idle)

    def _ping_if_idle(self) -> None:
        """Keep an idle connection proven: a PING whose reply the watchdog waits for."""
        self.pinger = None
        if not self.usable:
            return
        idle = self.loop.time() - self.last_write
        if idle >= self.health_check and not self.waiting:
            self.send([PING]).add_done_callback(_ignore)
            idle = 0.0
        self.pinger = self.loop.call_later(self.health_check - idle, self._ping_if_idle)

    def send(self, commands: list[bytes]) -> asyncio.Future[list[Reply]]:
        future: asyncio.Future[list[Reply]] = self.loop.create_future()
        self.send_then(commands, functools.partial(_to_future, future))
        return future

    def send_then(self, commands: list[bytes], then: Then) -> None:
        """Write ``commands``; ``then`` is called with their replies, or the connection's
        failure, from the protocol's own callbacks (no loop turn in between)."""
        if self.transport is None or self.transport.is_closing():
            then(rx.ConnectionError("the connection to Redis is closed"))
            return
        self.transport.write(b"".join(commands))
        self.last_write = now = self.loop.time()
        self.waiting.append((len(commands), [], then, now))
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(self.reply_timeout, self._check)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while waiting:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self._abort(rx.ConnectionError(f"the server does not speak Redis: {exc}"))
                return
            if reply is False:
                return
            expected, replies, then, _ = waiting[0]
            replies.append(reply)
            if len(replies) == expected:
                waiting.popleft()
                then(replies)

    def _check(self) -> None:
        self.watchdog = None
        if not self.waiting:
            return
        overdue = self.waiting[0][3] + self.reply_timeout - self.loop.time()
        if overdue <= 0:
            self._abort(rx.TimeoutError(f"no reply from Redis within {self.reply_timeout:g} s"))
        else:
            self.watchdog = self.loop.call_later(overdue, self._check)

    def _abort(self, error: Exception) -> None:
        """Fail every waiting call with ``error`` and drop the connection (no reply can be
        trusted to belong to its call any more)."""
        self.broken = error
        self._fail(error)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pinger is not None:
            self.pinger.cancel()
            self.pinger = None
        self._fail(rx.ConnectionError(f"the connection to Redis was lost: {exc or 'closed'}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        while self.waiting:
            *_, then, _ = self.waiting.popleft()
            then(error)


PING = b"*1\r\n$4\r\nPING\r\n"

Then = Callable[[list[Reply] | Exception], None]
"""Takes a batch's replies, or the exception that failed the batch."""


def _to_future(future: asyncio.Future[list[Reply]], outcome: list[Reply] | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _ignore(future: asyncio.Future[list[Reply]]) -> None:
    """A health-check PING's outcome: a failure has closed the connection already."""
    if not future.cancelled():
        future.exception()


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
        health_check: float = HEALTH_CHECK_S,
    ) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.health_check = health_check
        self._failing: str | None = None
        """The failure being reported, logged once until a connection works again."""
        self._protocol: _Protocol | None = None
        self._lock: asyncio.Lock | None = None
        self._queued = 0
        self._closed = False

    @classmethod
    def for_url(cls, url: str) -> Wire | None:
        endpoint = Endpoint.parse(url)
        return None if endpoint is None else cls(endpoint)

    def send_now(self, commands: list[bytes], then: Then) -> bool:
        """``execute`` without a coroutine or a future when connected and nothing queues (the
        hot path): ``then`` is called with the replies or the failure, straight from the
        connection's callbacks. False (nothing sent) otherwise."""
        protocol = self._protocol
        if self._queued or protocol is None or not protocol.usable:
            return False
        protocol.send_then(commands, then)
        return True

    async def execute(self, commands: list[bytes]) -> list[Reply]:
        """Write packed commands as one buffer; their replies in order (errors as values).

        Raises ``redis.exceptions.ConnectionError`` / ``TimeoutError`` when the connection
        fails before every reply is read.
        """
        protocol = self._protocol
        if self._queued or protocol is None or not protocol.usable:
            self._queued += 1
            try:
                protocol = await self._connected()
            finally:
                self._queued -= 1
        # (written before the next in line: the lock is FIFO)
        return await protocol.send(commands)

    async def _connected(self) -> _Protocol:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._closed:
                raise rx.ConnectionError("the engine's Redis connection is closed")
            if self._protocol is None or not self._protocol.usable:
                if self._protocol is not None and self._protocol.broken is not None:
                    self._report(self._protocol.broken)
                try:
                    self._protocol = await self._connect()
                except rx.ConnectionError as exc:
                    self._report(exc)
                    raise
                if self._failing is not None:
                    log.warning("the credit scripts' connection to Redis works again")
                    self._failing = None
            return self._protocol

    def _report(self, error: Exception) -> None:
        """One log line per kind of failure, not one per call."""
        text = str(error)
        if text != self._failing:
            self._failing = text
            log.warning("the credit scripts' connection to Redis failed: %s", text)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):

                def made() -> _Protocol:
                    return _Protocol(loop, self.reply_timeout, self.health_check)

                if ep.path is not None:
                    _, protocol = await loop.create_unix_connection(made, ep.path)
                else:
                    _, protocol = await loop.create_connection(made, ep.host, ep.port)
                await self._handshake(protocol)
        except BaseException as exc:
            if protocol is not None and protocol.transport is not None:
                protocol.transport.close()
            if isinstance(exc, OSError | TimeoutError):
                raise rx.ConnectionError(f"cannot connect to Redis: {exc}") from exc
            raise
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        """AUTH and SELECT as the URL says, then a PING: the server must answer as Redis."""
        commands = []
        if self.endpoint.password is not None:
            auth = (self.endpoint.username, self.endpoint.password)
            commands.append(pack("AUTH", *[p for p in auth if p is not None]))
        if self.endpoint.db:
            commands.append(pack("SELECT", self.endpoint.db))
        commands.append(PING)
        replies = await protocol.send(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise rx.ConnectionError(f"Redis refused the connection's setup: {reply}")
        if replies[-1] != "PONG":
            raise rx.ConnectionError(
                f"the server does not speak Redis: PING answered {replies[-1]!r}"
            )

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
