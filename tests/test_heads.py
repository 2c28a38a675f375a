"""The bounded protocol without a server: reads as the event loop hands them over, cut anywhere.

A transport that records what is written stands in for the socket (as uvicorn's own protocol
tests do); the app answers 200 with the size of the body it read. The whole-process behaviour
(memory, other clients, workers) is in tests/e2e/test_heads.py.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import re
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from gateway.heads import BoundedHttpToolsProtocol, HeadLimits, bounded_http
from gateway.proxy.bodies import CLIENT_GONE
from gateway.settings import ConfigError, Settings

LIMITS = HeadLimits(request_line=256, headers=8, header_bytes=512)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.eof = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def statuses(self) -> list[int]:
        return [int(status) for status in re.findall(rb"HTTP/1.1 (\d{3}) ", self.written)]


async def app(scope: Any, receive: Any, send: Any) -> None:
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Writes(Transport):
    """Records each write apart: how many pieces an answer went out in."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        self.writes.append(bytes(data))


def connection(
    transport: Transport | None = None, answer: Any = app
) -> tuple[BoundedHttpToolsProtocol, Transport]:
    config = uvicorn.Config(answer, lifespan="off", log_level="warning")
    protocol = BoundedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, limits=LIMITS
    )
    transport = transport or Transport()
    protocol.connection_made(transport)
    return protocol, transport


def head(target: str = "/", headers: int = 1, pad: int = 0) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: h"]
    lines += [f"X-{i}: v" for i in range(headers - 1)]
    if pad:
        lines[-1] += "v" * pad
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def feed(data: bytes, piece: int | None = None) -> Transport:
    protocol, transport = connection()
    step = piece or len(data) or 1
    for start in range(0, len(data), step):
        protocol.data_received(data[start : start + step])
        await asyncio.sleep(0)
    for _ in range(100):  # let pipelined requests be answered one after the other
        await asyncio.sleep(0)
    return transport


@pytest.mark.parametrize("piece", [None, 1, 7], ids=["one-read", "byte-by-byte", "7-bytes"])
async def test_the_count_is_the_same_however_the_head_is_cut(piece: int | None) -> None:
    line_fits = "/" + "a" * (LIMITS.request_line - len("GET / HTTP/1.1\r\n"))
    assert (await feed(head(line_fits), piece)).statuses() == [200]
    assert (await feed(head(line_fits + "a"), piece)).statuses() == [414]
    assert (await feed(head(headers=8), piece)).statuses() == [200]
    assert (await feed(head(headers=9), piece)).statuses() == [431]
    fits = LIMITS.header_bytes - len("Host: h\r\n") - len("X-0: v\r\n")
    assert (await feed(head(headers=2, pad=fits), piece)).statuses() == [200]
    assert (await feed(head(headers=2, pad=fits + 1), piece)).statuses() == [431]


async def test_a_refusal_is_the_contracts_json_then_the_connection_ends() -> None:
    transport = await feed(head(headers=9) + head())
    answer, _, body = transport.written.partition(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"\r\nconnection: close" in answer and b"\r\ncontent-type: application/json" in answer
    assert json.loads(body) == {
        "success": False,
        "error": "request_header_fields_too_large",
        "message": "the request has more than 8 header lines",
    }
    assert transport.eof  # the request after it was never parsed


async def test_a_large_body_in_the_read_that_ends_its_head_is_not_counted() -> None:
    body = b"b" * (4 * LIMITS.wire_bytes)
    request = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    transport = await feed(request + head())
    assert transport.statuses() == [200, 200]
    assert transport.written.split(b"\r\n\r\n")[1].startswith(str(len(body)).encode())


async def test_many_small_requests_in_one_read_are_each_counted_afresh() -> None:
    requests = head(headers=8) * (4 * LIMITS.wire_bytes // len(head(headers=8)))
    transport = await feed(requests)
    assert transport.statuses() == [200] * requests.count(b"GET ")


@pytest.mark.parametrize("before", [0, 2], ids=["first-request", "after-two-requests"])
async def test_an_unfinished_head_is_refused_once_it_outgrows_its_room(before: int) -> None:
    protocol, transport = connection()
    for _ in range(before):
        protocol.data_received(head())
        for _ in range(10):
            await asyncio.sleep(0)
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(LIMITS.wire_bytes // 100 + 1):
        protocol.data_received(b"a" * 100)
    assert transport.statuses() == [200] * before + [431]
    protocol.data_received(b"a" * (1 << 20))  # nothing more is parsed, nor kept
    assert transport.statuses() == [200] * before + [431]


def test_the_limits_come_from_the_settings_and_reach_worker_processes() -> None:
    settings = Settings.load(max_request_line=1024, max_headers=20, max_header_bytes=4096)
    assert HeadLimits.of(settings) == HeadLimits(1024, 20, 4096)
    factory = pickle.loads(pickle.dumps(bounded_http(settings)))  # as to a spawned worker
    assert factory.keywords == {"limits": HeadLimits(1024, 20, 4096)}  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["MAX_REQUEST_LINE", "MAX_HEADERS", "MAX_HEADER_BYTES"])
def test_a_limit_of_zero_stops_the_start(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(f"CREDITGATE_{name}", "0")
    with pytest.raises(ConfigError, match=name.lower()):
        Settings.load()


async def test_each_request_learns_of_its_client_gone_from_a_future_in_its_scope() -> None:
    """Done when the connection is lost before the answer was complete, not after it."""
    scopes: list[Any] = []
    answer = asyncio.Event()

    async def waiting(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await answer.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    for lost_after_answer in (True, False):
        protocol, transport = connection()
        protocol.app = waiting
        answer.clear()
        protocol.data_received(head())
        await asyncio.sleep(0)
        if lost_after_answer:
            answer.set()
            for _ in range(10):
                await asyncio.sleep(0)
            assert transport.statuses() == [200]
        protocol.connection_lost(None)
        gone = scopes[-1]["extensions"][CLIENT_GONE]["future"]
        assert gone.done() is not lost_after_answer
    answer.set()  # the app of the connection lost mid-request ends (its answer goes nowhere)
    for _ in range(10):
        await asyncio.sleep(0)


async def test_pipelined_requests_each_learn_of_their_client_gone() -> None:
    """Two requests in one read: the first is being answered, the second waits its turn. The
    connection lost, both are told (uvicorn marks only the newest disconnected)."""
    started: list[Any] = []
    answer = asyncio.Event()

    async def waiting(scope: Any, receive: Any, send: Any) -> None:
        started.append(scope)
        await answer.wait()

    protocol, _ = connection()
    protocol.app = waiting
    protocol.data_received(head("/first") + head("/second"))
    await asyncio.sleep(0)
    queued = [cycle.scope for cycle, _ in protocol.pipeline]
    assert [scope["path"] for scope in [*started, *queued]] == ["/first", "/second"]
    futures = [scope["extensions"][CLIENT_GONE]["future"] for scope in [*started, *queued]]
    assert not any(future.done() for future in futures)

    protocol.connection_lost(None)

    assert all(future.done() for future in futures)
    answer.set()
    for _ in range(10):
        await asyncio.sleep(0)


async def test_an_answers_head_goes_out_with_its_body_in_one_write() -> None:
    """uvicorn writes a head, then its body: two segments, two wake-ups of the client."""
    transport = Writes()
    protocol, _ = connection(transport)
    protocol.data_received(head() + head())
    for _ in range(20):
        await asyncio.sleep(0)
    assert transport.statuses() == [200, 200]
    assert [
        w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(b"\r\n\r\n0") for w in transport.writes
    ] == [True, True]


async def test_a_head_whose_body_comes_later_goes_out_at_the_end_of_its_turn() -> None:
    body_sent = asyncio.Event()

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await body_sent.wait()
        await send({"type": "http.response.body", "body": b"later"})

    transport = Writes()
    protocol, _ = connection(transport, stream)
    protocol.data_received(head())
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    body_sent.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.writes[1:] == [b"5\r\nlater\r\n0\r\n\r\n"]


async def test_a_100_continue_is_not_held() -> None:
    """The client waits for it before it sends its body: it goes at once."""
    transport = Writes()
    protocol, _ = connection(transport)
    protocol.data_received(
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    )
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    protocol.data_received(b"body")
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.statuses() == [100, 200] and transport.written.endswith(b"\r\n\r\n4")
