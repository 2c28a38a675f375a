"""Bounded request heads: uvicorn's httptools protocol, refusing an oversized head as it arrives.

uvicorn with httptools sets no limit on a request's head: httptools keeps an unfinished header
in memory however long it grows (one for one with what is sent) and uvicorn re-copies the URL
at every read (quadratic), all before the app, and so before any authentication, sees the
request. Every server creditgate starts (``serve``, its workers, the demo's gateway) runs this
protocol instead, with the limits of the settings:

    the head breaks                                    status  error
    request line > CREDITGATE_MAX_REQUEST_LINE bytes   414     uri_too_long
    more than CREDITGATE_MAX_HEADERS header lines      431     request_header_fields_too_large
    header lines > CREDITGATE_MAX_HEADER_BYTES bytes   431     request_header_fields_too_large

The request line counts its method, target and version with their spaces and CRLF; a header
line counts as ``name: value`` CRLF. A refusal is the contract's JSON error with
``Connection: close``, sent as soon as a limit is passed (after the answers to any requests
pipelined before it) and followed by a FIN; nothing more of the connection is parsed, and what
still arrives is discarded until it is closed, ``LINGER_S`` later at most. The count restarts
with each request of a keep-alive connection.

How, cheaply: the parser's callbacks count exactly (``on_url`` per piece of the target,
``on_header`` per header), and a callback over a limit stops the parser where it stands.
Callbacks alone cannot bound memory, since httptools reports a header only once it is complete,
so ``data_received`` also counts the bytes of the head as they arrive and never hands the parser
more than the whole head may take (``HeadLimits.wire_bytes``): whatever is sent, the parser
holds at most that much (plus one read, when a head starts in the read that ends the request
before it). Once the head is complete, bodies are fed uncounted: the cost per request is a few
additions.

The protocol also tells the app of a client gone mid-request without the app waiting on
``receive`` in a task of its own: each request's scope carries a future in its ``extensions``
(``gateway.proxy.bodies.CLIENT_GONE``), done when the connection is lost before the answer was
complete, exactly when uvicorn marks the request disconnected.

And it writes an answer's head together with the start of its body (``HeadWithBody``): uvicorn
writes them apart, two segments and two wake-ups of the client for a small answer. At one
connection (``bench/proxy.py``, the 2-core VM) the second write was some 50 µs of the
gateway's p50; a head whose body does not follow at once (a stream) still goes at the end of
the loop turn.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.errors import error_body
from gateway.proxy.bodies import CLIENT_GONE
from gateway.settings import Settings

log = logging.getLogger("creditgate.heads")

LINE_FRAME = len(b"  HTTP/1.1\r\n")
"""What a request line adds to its method and target: two spaces, the version, CRLF."""
HEADER_FRAME = len(b": \r\n")
"""What a header line adds to its name and value."""
METHOD_MAX = 32
"""Longer than any method the parser accepts."""
HEAD_SLACK = 1024
"""Bytes a head may carry on the wire beyond its counted lines: the blank line that ends it,
padding around values and blank lines before the request, which the parser drops."""
LINGER_S = 1.0
"""How long a refused connection is still read (and what comes discarded) after the refusal
and a FIN were sent, before it is closed: closing a socket with unread input resets it, and a
reset can destroy the refusal before the client has read it."""


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """The most a request head may hold; bytes as the client sent them."""

    request_line: int
    headers: int
    header_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> HeadLimits:
        return cls(settings.max_request_line, settings.max_headers, settings.max_header_bytes)

    @property
    def wire_bytes(self) -> int:
        """The most of one head the parser is ever given."""
        return self.request_line + self.header_bytes + HEAD_SLACK


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    code: str
    message: str

    def response(self, default_headers: list[tuple[bytes, bytes]]) -> bytes:
        body = json.dumps(error_body(self.code, self.message)).encode()
        lines = [STATUS_LINE[self.status]]
        lines += [b"%s: %s\r\n" % (name, value) for name, value in default_headers]
        lines += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        return b"".join(lines)


def _headers_too_large(message: str) -> Refusal:
    return Refusal(431, "request_header_fields_too_large", message)


class HeadTooLarge(Exception):
    """Raised by a parser callback to stop the parser at a limit (never leaves this module)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``HeadLimits`` (see the module's docstring).

    Each count is a room that runs down, reset when a request ends; the hot path is a
    subtraction and a comparison per read, per piece of URL and per header.
    """

    def __init__(self, *args: Any, limits: HeadLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.max_headers = limits.headers
        self.heads_received = 0
        self.refusal: Refusal | None = None
        self._unanswered: deque[asyncio.Future[None]] = deque()
        """The ``CLIENT_GONE`` futures of the requests not yet answered, oldest first (more
        than one when requests are pipelined: uvicorn answers them in turn)."""
        self._new_head()

    def _new_head(self) -> None:
        # What the head being received may still take: on the wire (None within a body), in
        # its request line's method and target, and in its header lines.
        self.head_room: int | None = self.limits.wire_bytes
        self.line_room = self.limits.request_line - LINE_FRAME
        self.header_room = self.limits.header_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        HttpToolsProtocol.connection_made(self, transport)  # type: ignore[arg-type]
        # Every write of the connection goes through it, so they stay in order.
        self.transport = cast(asyncio.Transport, HeadWithBody(self.transport, self.loop))

    # Reading: count the head's bytes, never feed the parser more than it may take.

    def data_received(self, data: bytes) -> None:
        if self.refusal is not None:
            return  # refused: what follows is never parsed
        room = self.head_room
        if room is None or len(data) <= room:
            if room is not None:
                self.head_room = room - len(data)
            self._feed(data)
            return
        view = memoryview(data)
        while room is not None and len(view) > room:
            heads = self.heads_received
            self.head_room = 0
            if not self._feed(view[:room]):
                return
            if self.heads_received == heads:  # still the same head, and no room left
                wire = self.limits.wire_bytes
                self._refuse(_headers_too_large(f"the request's head is over {wire} bytes"))
                return
            view = view[room:]  # the head ended in what was fed: the rest is its body
            room = self.head_room
        if room is not None:
            self.head_room = room - len(view)
        self._feed(view)

    def _feed(self, data: bytes | memoryview) -> bool:
        """uvicorn's ``data_received``, telling this module's refusals from bad requests;
        False when the connection is done with (refused, malformed or upgraded)."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse(exc.__context__.refusal)
            else:
                self._bad_request()
            return False
        except httptools.HttpParserError:
            self._bad_request()
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    # Parser callbacks: exact counts, stopping the parser at a limit. They call the parent by
    # name: zero-argument super() cost half a microsecond a call here, on every header.

    def on_url(self, url: bytes) -> None:
        self.line_room -= len(url)
        # The method is known here, but its length is only needed when the room runs short.
        if self.line_room < METHOD_MAX and self.line_room < len(self.parser.get_method()):
            raise HeadTooLarge(
                Refusal(
                    414,
                    "uri_too_long",
                    f"the request line is over {self.limits.request_line} bytes",
                )
            )
        HttpToolsProtocol.on_url(self, url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_room -= len(name) + len(value) + HEADER_FRAME
        if self.header_room < 0 or len(self.headers) >= self.max_headers:
            raise HeadTooLarge(
                _headers_too_large(
                    f"the request has more than {self.max_headers} header lines"
                    if len(self.headers) >= self.max_headers
                    else f"the request's header lines are over {self.limits.header_bytes} bytes"
                )
            )
        HttpToolsProtocol.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        self.head_room = None
        self.heads_received += 1
        gone: asyncio.Future[None] = self.loop.create_future()
        self._unanswered.append(gone)
        self.scope.setdefault("extensions", {})[CLIENT_GONE] = {"future": gone}
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._new_head()  # what comes next is the next request's head

    # The client gone: the ``CLIENT_GONE`` future of each request whose answer was not
    # complete, so the app needs no task waiting on ``receive`` to learn it. (uvicorn marks
    # only the newest request disconnected: with pipelining, the one being answered is older.)

    def connection_lost(self, exc: Exception | None) -> None:
        HttpToolsProtocol.connection_lost(self, exc)
        unanswered, self._unanswered = self._unanswered, deque()
        for gone in unanswered:
            if not gone.done():
                gone.set_result(None)

    # Refusing: answer once the responses in flight are written, then close.

    def _refuse(self, refusal: Refusal) -> None:
        self.refusal = refusal
        log.info("request head refused: %s %s", refusal.status, refusal.message)
        if self.cycle is None or self.cycle.response_complete:
            self._send_refusal()
        # else: a pipelined request is still being answered; on_response_complete sends it

    def on_response_complete(self) -> None:
        if self._unanswered:
            self._unanswered.popleft()  # the oldest request's: answers go out in order
        last = not self.pipeline
        super().on_response_complete()
        if self.refusal is not None and last and not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self._send_refusal()

    def _send_refusal(self) -> None:
        assert self.refusal is not None
        self.transport.write(self.refusal.response(self.server_state.default_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


class HeadWithBody:
    """The connection's transport as uvicorn and this protocol see it: a response's head is
    written together with the first piece of its body (one write, so one segment and one
    wake-up of the client, where uvicorn makes two).

    A write that starts a response (``HTTP/1.1``, not a ``100 Continue``: the client waits for
    that one to send its body) is held until the next write, which takes it along, or the end
    of the loop turn (an answer without a body, a stream whose first chunk comes later). Every
    write of the connection goes through here, so none overtakes a head held; a large first
    piece of body (past ``JOIN_LIMIT``) is not copied into the head but written after it.
    """

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= JOIN_LIMIT:
                self._transport.write(head + data)
                return
            self._transport.write(head)
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100 "):
            self._head = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Write the head held, if any."""
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


JOIN_LIMIT = 65_536
"""The largest first piece of a body copied into its head's write."""


def bounded_http(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` option for a creditgate server: the protocol with the settings' limits.

    A ``partial`` of a module-level class, so that it pickles by reference into the worker
    processes of ``serve --workers N``; uvicorn only calls it, as it would the class.
    """
    factory = functools.partial(BoundedHttpToolsProtocol, limits=HeadLimits.of(settings))
    return cast("type[asyncio.Protocol]", factory)
