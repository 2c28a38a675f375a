"""Request heads are bounded on a real ``creditgate serve`` (gateway.heads), on raw sockets.

Each replica here is the test's own, so an attack cannot slow another test's gateway: one with
the default limits (its memory is watched through /proc), and one of two workers with small
limits from the environment (the limits reach the worker processes).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.settings import Settings
from tests.support.gateways import Backends, NewAccount, start_replica, stop_procs, wait_ready
from tests.support.rawhttp import (
    Exchange,
    PeakMemory,
    connect,
    read_answers,
    request,
    send_until_answered,
)

pytestmark = pytest.mark.slow

MakeAccount = Callable[..., Awaitable[NewAccount]]

MAX_LINE: int = Settings().max_request_line
MAX_HEADERS: int = Settings().max_headers
MAX_HEADER_BYTES: int = Settings().max_header_bytes
LINE_FRAME = len("GET  HTTP/1.1\r\n")
HEADER_FRAME = len(": \r\n")
MEMORY_RISE_KB = 8 * 1024
"""What reading a refused head may add to the server's peak memory: a few reads' buffers."""
HEALTHZ_BOUND_S = 2.0


@dataclass(frozen=True, slots=True)
class Replica:
    url: str
    pid: int


@pytest.fixture(scope="module")
def replica(gateway_env: dict[str, str]) -> Iterator[Replica]:
    workdir = Path(gateway_env["CREDITGATE_TEST_WORKDIR"])
    url, proc, log = start_replica(gateway_env, workdir, "heads.log")
    try:
        wait_ready(url, proc, log)
        yield Replica(url, proc.pid)
    finally:
        stop_procs([proc])


def at_line_limit(extra: int = 0) -> bytes:
    target = "/healthz?pad="
    target += "a" * (MAX_LINE - LINE_FRAME - len(target) + extra)
    return request(target, [("Host", "gateway")])


def at_count_limit(extra: int = 0) -> bytes:
    pads = [(f"X-Pad-{i}", "v") for i in range(MAX_HEADERS - 1 + extra)]
    return request("/healthz", [("Host", "gateway"), *pads])


def at_bytes_limit(extra: int = 0) -> bytes:
    host = ("Host", "gateway")
    used = len(host[0]) + len(host[1]) + HEADER_FRAME + len("X-Pad") + HEADER_FRAME
    return request("/healthz", [host, ("X-Pad", "v" * (MAX_HEADER_BYTES - used + extra))])


def exchange(url: str, data: bytes, answers: int = 1) -> Exchange:
    with connect(url) as sock:
        sock.sendall(data)
        return read_answers(sock, answers)


def assert_refused(done: Exchange, status: int, error: str) -> None:
    assert [a.status for a in done.answers] == [status], done
    answer = done.answers[0]
    assert answer.headers["connection"] == "close"
    assert answer.headers["content-type"] == "application/json"
    body = json.loads(answer.body)
    assert (body["success"], body["error"]) == (False, error)
    assert body["message"]
    assert done.closed


@pytest.mark.parametrize(
    ("build", "status", "error"),
    [
        (at_line_limit, 414, "uri_too_long"),
        (at_count_limit, 431, "request_header_fields_too_large"),
        (at_bytes_limit, 431, "request_header_fields_too_large"),
    ],
    ids=["request-line", "header-count", "header-bytes"],
)
def test_a_head_at_the_limit_passes_and_one_byte_more_is_refused(
    replica: Replica, build: Callable[[int], bytes], status: int, error: str
) -> None:
    done = exchange(replica.url, build(0))
    assert [a.status for a in done.answers] == [200]
    assert not done.closed  # kept alive
    assert_refused(exchange(replica.url, build(1)), status, error)


def test_each_request_of_a_keep_alive_connection_is_counted_afresh(replica: Replica) -> None:
    with connect(replica.url) as sock:
        for _ in range(3):
            sock.sendall(at_bytes_limit())
            assert [a.status for a in read_answers(sock, 1, close_s=0).answers] == [200]
        sock.sendall(at_count_limit() + at_line_limit() + at_bytes_limit())  # pipelined
        assert [a.status for a in read_answers(sock, 3, close_s=0).answers] == [200] * 3
        sock.sendall(at_count_limit(1))
        assert_refused(read_answers(sock, 1), 431, "request_header_fields_too_large")


async def test_5000_headers_are_refused_before_the_backend_or_a_charge(
    replica: Replica, backends: Backends, account: MakeAccount
) -> None:
    acct = await account("pro")
    before = (backends.codegen.hits_now(), backends.review.hits_now())
    head = request(
        "/api/projects/json",
        [
            ("Host", "gateway"),
            ("Authorization", f"Bearer {acct.api_key}"),
            *((f"X-Pad-{i}", "v") for i in range(5000)),
        ],
    )
    assert_refused(exchange(replica.url, head), 431, "request_header_fields_too_large")
    assert (backends.codegen.hits_now(), backends.review.hits_now()) == before
    async with httpx.AsyncClient(base_url=replica.url, headers=acct.auth) as client:
        usage = (await client.get("/api/user/usage")).json()["usage"]
    assert usage["creditsRemaining"] == 100  # nothing charged


async def test_a_refusal_behind_a_pipelined_request_waits_for_its_answer(
    replica: Replica, backends: Backends, account: MakeAccount
) -> None:
    acct = await account("pro")
    auth = ("Authorization", f"Bearer {acct.api_key}")
    first = request("/api/projects/hang?token=heads", [("Host", "gateway"), auth])
    with connect(replica.url) as sock:
        sock.sendall(first + at_count_limit(1))
        deadline = time.monotonic() + 10
        while "heads" not in backends.codegen.started:
            assert time.monotonic() < deadline, "the first request never reached the backend"
            time.sleep(0.02)
        backends.codegen.release("heads")
        done = read_answers(sock, 2)
    assert [a.status for a in done.answers] == [200, 431]
    assert json.loads(done.answers[0].body)["late"] is True
    assert done.closed


@pytest.mark.parametrize(
    ("total", "filler", "pause_s"),
    [(300 << 20, 1 << 20, 0.0), (50 << 20, 1 << 10, 0.005)],
    ids=["300MB-fast", "50MB-slow"],
)
def test_an_unfinished_header_block_is_cut_off_at_flat_memory(
    replica: Replica, total: int, filler: bytes, pause_s: float
) -> None:
    peak = PeakMemory(replica.pid)
    with connect(replica.url) as sock:
        done = send_until_answered(
            sock,
            b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: ",
            b"a" * filler,
            total=total,
            pause_s=pause_s,
        )
    assert_refused(done, 431, "request_header_fields_too_large")
    assert done.sent < total
    assert peak.rise_kb() < MEMORY_RISE_KB, f"sent {done.sent} bytes"


def test_an_unfinished_huge_request_line_is_414_and_others_are_still_served(
    replica: Replica,
) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def attack() -> None:
        while not stop.is_set():
            with connect(replica.url) as sock:
                done = send_until_answered(sock, b"GET /", b"a" * (1 << 20), total=128 << 20)
            statuses.extend([a.status for a in done.answers] or [0])

    attacker = threading.Thread(target=attack, daemon=True)
    waits: list[float] = []
    with httpx.Client(base_url=replica.url, timeout=30) as client:
        attacker.start()
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                started = time.monotonic()
                assert client.get("/healthz").status_code == 200
                waits.append(time.monotonic() - started)
                time.sleep(0.02)
        finally:
            stop.set()
            attacker.join(60)
    assert statuses and set(statuses) == {414}, statuses
    assert max(waits) < HEALTHZ_BOUND_S, f"/healthz took up to {max(waits):.1f} s"


SMALL = {
    "CREDITGATE_MAX_REQUEST_LINE": "512",
    "CREDITGATE_MAX_HEADERS": "20",
    "CREDITGATE_MAX_HEADER_BYTES": "2048",
}


def test_limits_are_configurable_and_hold_in_every_worker(gateway_env: dict[str, str]) -> None:
    workdir = Path(gateway_env["CREDITGATE_TEST_WORKDIR"])
    url, proc, log = start_replica(
        gateway_env | SMALL, workdir, "heads-workers.log", "--workers", "2"
    )
    try:
        wait_ready(url, proc, log)
        host = ("Host", "gateway")
        twenty = [host, *((f"X-Pad-{i}", "v") for i in range(19))]
        assert [a.status for a in exchange(url, request("/healthz", twenty)).answers] == [200]
        for _ in range(8):  # connections land on either worker
            done = exchange(url, request("/healthz", [*twenty, ("X-One-More", "v")]))
            assert_refused(done, 431, "request_header_fields_too_large")
            assert_refused(exchange(url, request("/" + "a" * 512, [host])), 414, "uri_too_long")
            big = request("/healthz", [host, ("X-Pad", "v" * 2048)])
            assert_refused(exchange(url, big), 431, "request_header_fields_too_large")
    finally:
        stop_procs([proc])
