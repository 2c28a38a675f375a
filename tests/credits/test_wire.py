"""The scripts' own pipelined connection (``gateway.credits.wire``), on a real Redis: replies
matched to their batches, errors as values, a lost or silent connection failing its callers
and the next call connecting again."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import uvloop
from redis import exceptions as rx

from gateway.credits.scripts import is_missing
from gateway.credits.wire import Endpoint, Wire, pack, pack_fcall
from gateway.services import open_services
from gateway.settings import Settings


@pytest.fixture
async def wire(redis_url: str) -> AsyncIterator[Wire]:
    made = Wire.for_url(redis_url)
    assert made is not None
    yield made
    await made.aclose()


def test_pack_writes_resp_arrays_of_bulk_strings() -> None:
    assert pack("SET", "kø", 12) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\xc3\xb8\r\n$2\r\n12\r\n"
    assert pack(b"\r\n") == b"*1\r\n$2\r\n\r\n\r\n"
    for bad in (None, True, 1.5):
        with pytest.raises(TypeError, match="str, bytes or int"):
            pack("SET", "k", bad)


@pytest.mark.parametrize(
    ("keys", "args"),
    [
        (["{b1}:a:x", "{b1}:deadlines"], ["x", "rid", 1, "", -5, 10**20, "free=5/20"]),
        ([], []),
        (["k"], ["kø", b"\x00\xff", 3]),  # not ASCII, bytes: the general way
    ],
    ids=["ascii", "none", "utf8-and-bytes"],
)
def test_fcall_is_packed_as_pack_would(keys: list[str], args: list[object]) -> None:
    name = "creditgate_reserve_0123456789ab"
    for _ in range(2):  # the second time from the head packed before
        assert pack_fcall(name, keys, args) == pack("FCALL", name, len(keys), *keys, *args)


def test_fcall_refuses_what_pack_refuses() -> None:
    for bad in (True, None, 1.5):
        with pytest.raises(TypeError, match="str, bytes or int"):
            pack_fcall("f", ["k"], ["a", bad])
    with pytest.raises(UnicodeEncodeError):
        pack_fcall("f", ["k"], ["\udc80"])  # a lone surrogate is not UTF-8


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("redis://127.0.0.1:6379/3", Endpoint(db=3)),
        ("redis://redis.internal", Endpoint(host="redis.internal")),
        ("redis://:s%40cret@h:7000/0", Endpoint(host="h", port=7000, password="s@cret")),
        ("redis://app:pw@h?db=2", Endpoint(host="h", db=2, username="app", password="pw")),
        ("redis://h/1?db=2", Endpoint(host="h", db=2)),  # as redis-py reads it
        ("unix:///run/redis.sock?db=4", Endpoint(path="/run/redis.sock", db=4)),
        ("rediss://h:6380/0", None),
        ("redis://h/0?socket_timeout=3", None),
    ],
)
def test_endpoint_from_url(url: str, endpoint: Endpoint | None) -> None:
    assert Endpoint.parse(url) == endpoint


async def test_concurrent_batches_get_their_own_replies_in_order(
    wire: Wire, real_redis: aioredis.Redis
) -> None:
    async def batch(i: int) -> list[object]:
        return await wire.execute(
            [pack("SET", f"k{i}", i), pack("INCR", f"k{i}"), pack("GET", f"k{i}")]
        )

    replies = await asyncio.gather(*(batch(i) for i in range(200)))
    assert replies == [["OK", i + 1, str(i + 1)] for i in range(200)]
    # The URL's db was selected: redis-py on the same URL sees the keys.
    assert await real_redis.get("k7") == "8"


async def test_errors_are_values_and_a_missing_function_reads_as_missing(wire: Wire) -> None:
    replies = await wire.execute(
        [pack("SET", "h", "x"), pack("HGET", "h", "f"), pack("FCALL", "no_such", 0), pack("PING")]
    )
    assert replies[0] == "OK" and replies[3] == "PONG"
    assert isinstance(replies[1], rx.ResponseError) and "WRONGTYPE" in str(replies[1])
    assert is_missing(replies[2])


async def test_a_large_reply_read_in_many_chunks(wire: Wire) -> None:
    value = "v" * 3_000_000
    assert await wire.execute([pack("SET", "big", value), pack("GET", "big")]) == ["OK", value]


async def test_a_killed_connection_fails_its_callers_and_the_next_call_reconnects(
    wire: Wire, real_redis: aioredis.Redis
) -> None:
    [client_id] = await wire.execute([pack("CLIENT", "ID")])
    waiting = asyncio.ensure_future(wire.execute([pack("BLPOP", "never", 10)]))
    await asyncio.sleep(0.05)
    await real_redis.execute_command("CLIENT", "KILL", "ID", client_id)
    with pytest.raises(rx.ConnectionError):
        await asyncio.wait_for(waiting, 2)
    [new_id] = await wire.execute([pack("CLIENT", "ID")])
    assert new_id != client_id


async def test_a_silent_redis_times_out_and_the_next_call_reconnects(redis_url: str) -> None:
    wire = Wire.for_url(redis_url)
    assert wire is not None
    wire.reply_timeout = 0.3
    started = time.monotonic()
    with pytest.raises(rx.TimeoutError):
        await wire.execute([pack("BLPOP", "never", 5)])
    assert time.monotonic() - started < 2
    assert await wire.execute([pack("PING")]) == ["PONG"]
    await wire.aclose()


async def test_unreachable_or_refused_setup_is_a_connection_error(redis_url: str) -> None:
    for url in ("redis://127.0.0.1:1/0", redis_url.replace("redis://", "redis://:wrong@")):
        wire = Wire.for_url(url)
        assert wire is not None
        with pytest.raises(rx.ConnectionError):
            await wire.execute([pack("PING")])


def test_works_on_uvloop(redis_url: str) -> None:
    """uvloop's transports are not asyncio's classes; the server runs on uvloop."""

    async def main() -> list[object]:
        wire = Wire.for_url(redis_url)
        assert wire is not None
        try:
            return await wire.execute([pack("PING"), pack("ECHO", "é")])
        finally:
            await wire.aclose()

    assert uvloop.run(main()) == ["PONG", "é"]


async def test_services_give_the_engine_a_wire_only_for_a_plain_url(redis_url: str) -> None:
    for url, has_wire in ((redis_url, True), ("rediss://127.0.0.1:1/0", False)):
        services = open_services(Settings.load(redis_url=url, database_url="sqlite://"))
        try:
            assert (services.credits._wire is not None) is has_wire
        finally:
            await services.close()


async def test_batches_keep_their_order_through_a_reconnection(
    wire: Wire, real_redis: aioredis.Redis
) -> None:
    """While the connection is being opened again, later batches queue behind the first."""
    [client_id] = await wire.execute([pack("CLIENT", "ID")])
    await real_redis.execute_command("CLIENT", "KILL", "ID", client_id)
    await asyncio.sleep(0.05)
    sent = []
    for i in range(30):  # one batch a loop turn, as the batcher sends them
        sent.append(asyncio.ensure_future(wire.execute([pack("RPUSH", "order", i)])))
        await asyncio.sleep(0)
    await asyncio.gather(*sent)
    assert await real_redis.lrange("order", 0, -1) == [str(i) for i in range(30)]


async def test_a_closed_wire_does_not_connect_again(redis_url: str) -> None:
    wire = Wire.for_url(redis_url)
    assert wire is not None
    assert await wire.execute([pack("PING")]) == ["PONG"]
    await wire.aclose()
    with pytest.raises(rx.ConnectionError, match="closed"):
        await wire.execute([pack("PING")])


@contextlib.asynccontextmanager
async def not_redis(reply: bytes) -> AsyncIterator[int]:
    """A server that is not Redis (an HTTP port, say): it answers anything with ``reply``."""
    writers: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(1024)
        writer.write(reply)
        await writer.drain()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


@pytest.mark.parametrize(
    "reply",
    [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b"+OK\r\n", b"\x00\xff garbage"],
    ids=["http", "not-pong", "binary"],
)
async def test_a_server_that_is_not_redis_is_one_log_line_and_failed_calls(
    reply: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with not_redis(reply) as port:
        made = Wire.for_url(f"redis://127.0.0.1:{port}/0")
        assert made is not None
        made.reply_timeout = 2.0
        try:
            for _ in range(20):
                with pytest.raises(rx.ConnectionError, match="does not speak Redis"):
                    await made.execute([pack("EVALSHA", "0" * 40, 0)])
        finally:
            await made.aclose()
    lines = [r for r in caplog.records if r.name.startswith(("creditgate", "asyncio"))]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "does not speak Redis" in lines[0].getMessage()
    assert lines[0].exc_info is None  # no traceback
    assert "Traceback" not in caplog.text


async def test_recovery_after_a_failure_is_logged_once(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = Endpoint.parse(redis_url)
    assert endpoint is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])
    made = Wire(dataclasses.replace(endpoint, port=closed))
    caplog.set_level(logging.WARNING, logger="creditgate.redis")
    try:
        for _ in range(5):
            with pytest.raises(rx.ConnectionError, match="cannot connect"):
                await made.execute([pack("PING")])
        made.endpoint = endpoint
        for _ in range(5):
            assert await made.execute([pack("PING")]) == ["PONG"]
    finally:
        await made.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "failed: cannot connect" in messages[0] and "works again" in messages[1]


async def test_an_idle_connection_is_pinged(redis_url: str, real_redis: aioredis.Redis) -> None:
    """Left idle, the wire's connection is pinged (every ``health_check`` s), so a connection
    Redis or a proxy dropped is found before a request needs it. Polled with a wide deadline:
    a loaded machine may delay the pings, never skip them."""
    endpoint = Endpoint.parse(redis_url)
    assert endpoint is not None
    made = Wire(endpoint, health_check=0.05)
    try:
        assert await made.execute([pack("CLIENT", "SETNAME", "cg-idle-check")]) == ["OK"]

        async def last_command() -> str:
            clients = await real_redis.client_list()
            return next(str(c["cmd"]) for c in clients if c["name"] == "cg-idle-check")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await last_command() != "ping":
            assert loop.time() < deadline, "the idle connection was never pinged"
            await asyncio.sleep(0.05)
    finally:
        await made.aclose()
