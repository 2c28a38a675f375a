"""The HTTP/1.1 client to the backends (``gateway.proxy.upstream``) against scripted backends.

Each backend here is a raw asyncio server answering exact bytes, so the framings a real
backend may use (length, chunks, the connection's end, no body), its misbehaviour and the
pool's reuse of connections are each seen directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.proxy import upstream as up
from gateway.proxy.connection import UpstreamError
from gateway.proxy.upstream import Origin, Upstream
from gateway.settings import check_upstream


class Backend:
    """A scripted backend: ``answer(request_head, reader, writer)`` per request; it counts the
    connections it was given and keeps the raw requests it read."""

    def __init__(self, answer: Callable[..., Awaitable[bool]]) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                if not await self.answer(head, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def fixed(answer: bytes, keep: bool = True) -> Callable[..., Awaitable[bool]]:
    async def reply(head: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        length = _length(head)
        if length:
            await reader.readexactly(length)
        w.write(answer)
        await w.drain()
        return keep

    return reply


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


async def fetch(client: Upstream, url: str, method: str = "GET", data: bytes = b"") -> bytes:
    async with await client.request(method, client.origin(url), "/x", [], data) as answer:
        return await answer.read()


async def test_a_length_framed_answer_and_its_connection_used_again() -> None:
    async with Backend(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")) as backend:
        client = Upstream(read_timeout=5)
        assert await fetch(client, backend.url, "POST", b"{}") == b"hello"
        assert await fetch(client, backend.url) == b"hello"
        assert backend.connections == 1
        assert backend.requests[0].startswith(b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"Content-Length: 2\r\n" in backend.requests[0]
        assert b"Content-Length" not in backend.requests[1]  # a GET without a body
        await client.close()


async def test_a_chunked_answer_in_its_pieces() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with Backend(fixed(chunked)) as backend:
        client = Upstream(read_timeout=5)
        assert await fetch(client, backend.url) == b"abcde"
        assert await fetch(client, backend.url) == b"abcde"
        assert backend.connections == 1


async def test_an_answer_framed_by_the_close_is_whole_and_its_connection_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    async with Backend(fixed(answer, keep=False)) as backend:
        client = Upstream(read_timeout=5)
        assert await fetch(client, backend.url) == b"until the end"
        assert await fetch(client, backend.url) == b"until the end"
        assert backend.connections == 2


async def test_connection_close_is_honoured() -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with Backend(fixed(answer)) as backend:
        client = Upstream(read_timeout=5)
        assert await fetch(client, backend.url) == b"ok"
        assert await fetch(client, backend.url) == b"ok"
        assert backend.connections == 2


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"),
    ],
)
async def test_answers_without_a_body_end_at_their_head(method: str, answer: bytes) -> None:
    async with Backend(fixed(answer)) as backend:
        client = Upstream(read_timeout=1)
        assert await fetch(client, backend.url, method) == b""
        assert await fetch(client, backend.url, method) == b""
        assert backend.connections == 1


async def test_an_interim_answer_is_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx"
    async with Backend(fixed(answer)) as backend:
        client = Upstream(read_timeout=5)
        async with await client.request("POST", client.origin(backend.url), "/", [], b"") as a:
            assert a.status == 201
            assert a.raw_headers == [(b"Content-Length", b"1")]
            assert await a.read() == b"x"


async def test_an_answer_that_is_not_http_is_an_upstream_error() -> None:
    async with Backend(fixed(b"SSH-2.0-OpenSSH\r\n\r\n")) as backend:
        client = Upstream(read_timeout=5)
        with pytest.raises(UpstreamError, match="not HTTP/1.1"):
            await fetch(client, backend.url)


async def test_a_backend_closing_before_its_answer_is_an_upstream_error() -> None:
    async def hang_up(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        return False

    async with Backend(hang_up) as backend:
        client = Upstream(read_timeout=5)
        with pytest.raises(UpstreamError):
            await fetch(client, backend.url)


async def test_a_backend_breaking_off_its_body_is_an_upstream_error() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    async with Backend(fixed(cut, keep=False)) as backend:
        client = Upstream(read_timeout=5)
        with pytest.raises(UpstreamError):
            await fetch(client, backend.url)


async def test_a_silent_backend_times_out_for_the_head_and_for_the_body() -> None:
    async def silent(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async def stalls(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await asyncio.sleep(5)
        return False

    for answer in (silent, stalls):
        async with Backend(answer) as backend:
            client = Upstream(read_timeout=0.2)
            with pytest.raises(TimeoutError):
                await fetch(client, backend.url)


async def test_a_streamed_body_goes_out_chunked() -> None:
    async def echo(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        assert b"Transfer-Encoding: chunked" in head
        received = b""
        while True:
            size = int((await r.readuntil(b"\r\n")).strip(), 16)
            data = await r.readexactly(size + 2)
            if size == 0:
                break
            received += data[:-2]
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(received), received))
        return True

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one ", b"", b"two ", b"x" * 300_000):
            yield part

    async with Backend(echo) as backend:
        client = Upstream(read_timeout=5)
        async with await client.request("POST", client.origin(backend.url), "/", [], parts()) as a:
            assert await a.read() == b"one two " + b"x" * 300_000


async def test_a_cancelled_request_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def slow(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await r.read()  # until the gateway hangs up
        closed.set()
        return False

    async with Backend(slow) as backend:
        client = Upstream(read_timeout=5)
        call = asyncio.ensure_future(fetch(client, backend.url))
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(closed.wait(), 5)


async def test_an_answer_left_unread_closes_its_connection() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"
    async with Backend(fixed(answer)) as backend:
        client = Upstream(read_timeout=5)
        for _ in range(2):
            answer_ = await client.request("GET", client.origin(backend.url), "/", [], b"")
            answer_.close()
        assert backend.connections == 2


async def test_a_connection_the_backend_closed_while_idle_is_not_used() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"  # keep-alive, then closed
    async with Backend(fixed(answer, keep=False)) as backend:
        client = Upstream(read_timeout=5)
        assert await fetch(client, backend.url) == b"ok"
        await asyncio.sleep(0.1)  # the backend's close reaches the idle connection
        assert await fetch(client, backend.url) == b"ok"
        assert backend.connections == 2


async def test_past_the_limit_requests_wait_for_a_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(up, "LIMIT_PER_ORIGIN", 2)
    async with Backend(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as backend:
        client = Upstream(read_timeout=5)
        results = await asyncio.gather(*(fetch(client, backend.url) for _ in range(20)))
        assert results == [b"ok"] * 20
        assert backend.connections == 2


async def test_a_large_answer_read_slowly_arrives_whole() -> None:
    """Past ``READ_HIGH`` unread bytes the socket is paused, then resumed as they are taken."""
    body = bytes(range(256)) * 20_000  # 5 MB
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    async with Backend(fixed(answer)) as backend:
        client = Upstream(read_timeout=5)
        got = bytearray()
        async with await client.request("GET", client.origin(backend.url), "/", [], b"") as a:
            async for chunk in a.chunks():
                got += chunk
                await asyncio.sleep(0)
        assert bytes(got) == body
        assert await fetch(client, backend.url) == body
        assert backend.connections == 1


async def test_the_origin_keeps_the_upstream_path() -> None:
    origin = Origin.parse("http://backend.internal:8080/v2")
    assert (origin.host, origin.port, origin.base) == ("backend.internal", 8080, "/v2")
    assert origin.host_header == b"backend.internal:8080"
    assert Origin.parse("https://[::1]").host_header == b"[::1]"
    assert Origin.parse("https://api.example.com:443").port == 443


@pytest.mark.parametrize(
    "url",
    ["ftp://x", "http://", "http://user:pw@x", "http://x:99999", "http://x/?q=1", "http://x#f"],
)
def test_upstreams_the_client_cannot_send_to_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_upstream(url)
