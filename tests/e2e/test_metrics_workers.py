"""``creditgate serve --workers 2`` as Prometheus sees it: every scrape counts every call,
whichever worker answers it; the process metrics of every process of the server; a server
killed and started again counts from zero."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from gateway.services import Services
from tests.support import gateways
from tests.support.scrapes import series, total

MakeAccount = Callable[..., Awaitable[gateways.NewAccount]]
CALLS = 10
SCRAPES = 20


def connection_per_request(url: str) -> httpx.AsyncClient:
    """A client that opens a connection for each request: the kernel gives each to a worker."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=url, timeout=10, limits=limits)


async def scrape(http: httpx.AsyncClient) -> str:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return response.text


async def counted(http: httpx.AsyncClient, calls: int) -> bool:
    """Whether a scrape counts ``calls`` calls and their credits (each is counted a moment
    after its answer has gone out, its credits once its settle has landed)."""
    text = await scrape(http)
    return (
        total(text, "creditgate_requests_total") == calls
        and total(text, "creditgate_credits_charged_total") == calls
    )


async def every_process_up(http: httpx.AsyncClient, supervisor: int) -> bool:
    """Whether a scrape shows the supervisor and both workers (each worker's files exist from
    its start)."""
    processes = series(await scrape(http), "process_cpu_seconds_total", "pid")
    return len(processes) == 3 and (str(supervisor),) in processes


async def test_every_scrape_of_two_workers_counts_every_call(
    gateway_env: dict[str, str], account: MakeAccount, services: Services, tmp_path: Path
) -> None:
    options = ("--workers", "2", "--metrics-dir", str(tmp_path))
    url, proc, log = gateways.start_replica(gateway_env, tmp_path, "workers.log", *options)
    try:
        await asyncio.to_thread(gateways.wait_ready, url, proc, log)
        acct = await account("pro")
        async with connection_per_request(url) as http:
            # Ready means one worker answers; the other may still be starting on a busy machine.
            await gateways.wait_for(lambda: every_process_up(http, proc.pid))
            for _ in range(CALLS):
                response = await http.get("/api/projects/json?tokens=5", headers=acct.auth)
                assert response.status_code == 200
            await gateways.wait_settled(services, acct.account_id, total_tokens=5 * CALLS)
            await gateways.wait_for(lambda: counted(http, CALLS))
            texts = [await scrape(http) for _ in range(SCRAPES)]
    finally:
        gateways.stop_procs([proc])

    charged = [
        total(text, "creditgate_requests_total", route="/api/projects/", outcome="charged")
        for text in texts
    ]
    assert charged == [CALLS] * SCRAPES
    assert [total(text, "creditgate_open_reservations") for text in texts] == [0] * SCRAPES
    for text in texts:  # the supervisor and both workers, whichever worker answered
        processes = series(text, "process_cpu_seconds_total", "pid")
        assert len(processes) == 3 and (str(proc.pid),) in processes
        assert set(processes) == set(series(texts[0], "process_cpu_seconds_total", "pid"))


async def test_a_killed_server_starts_again_from_an_empty_directory(
    gateway_env: dict[str, str], account: MakeAccount, tmp_path: Path
) -> None:
    port = gateways.free_port()
    options = ("--workers", "2", "--metrics-dir", str(tmp_path))
    shared = tmp_path / f"creditgate-{port}"
    acct = await account("pro")

    url, proc, log = gateways.start_replica(gateway_env, tmp_path, "first.log", *options, port=port)
    try:
        await asyncio.to_thread(gateways.wait_ready, url, proc, log)
        async with connection_per_request(url) as http:
            for _ in range(3):
                assert (await http.get("/api/projects/x", headers=acct.auth)).status_code == 200
            await gateways.wait_for(lambda: counted(http, 3))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and its workers, no clean-up
        proc.wait()
    assert list(shared.glob("*.db"))  # the killed server's counts, left behind
    await gateways.wait_for(lambda: closed(port))

    url, proc, log = gateways.start_replica(gateway_env, tmp_path, "again.log", *options, port=port)
    try:
        await asyncio.to_thread(gateways.wait_ready, url, proc, log)
        async with connection_per_request(url) as http:
            for _ in range(5):
                assert total(await scrape(http), "creditgate_requests_total") == 0
            assert (await http.get("/api/projects/x", headers=acct.auth)).status_code == 200
            await gateways.wait_for(lambda: counted(http, 1))
    finally:
        gateways.stop_procs([proc])
    assert not shared.exists()  # a clean exit leaves nothing


async def closed(port: int) -> bool:
    """Whether nothing listens on ``port`` any more (the killed workers are gone)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on ``port`` (``/proc/net/tcp``: state 0A)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
            found.add(fields[9])
    return found


def holders(inode: str, pids: list[int]) -> set[int]:
    """The processes among ``pids`` that hold socket ``inode``."""
    target = f"socket:[{inode}]"
    held = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == target:
                    held.add(pid)
            except OSError:
                continue
    return held


async def test_each_worker_listens_on_a_socket_of_its_own(
    gateway_env: dict[str, str], tmp_path: Path
) -> None:
    # One socket shared by the workers goes to whichever accepts first: a burst of new
    # connections lands unevenly and stays (36 / 14, 46 / 4 counted under wrk -c50).
    options = ("--workers", "2", "--metrics-dir", str(tmp_path))
    url, proc, log = gateways.start_replica(gateway_env, tmp_path, "sockets.log", *options)
    try:
        await asyncio.to_thread(gateways.wait_ready, url, proc, log)
        port = int(url.rsplit(":", 1)[1])
        # Ready is one worker answering; the other may still be starting.
        deadline = time.monotonic() + 30
        while len(listening_inodes(port)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        processes = [proc.pid, *map(int, children)]
        owners = [holders(inode, processes) for inode in listening_inodes(port)]
        assert len(owners) == 2, owners
        assert all(len(o) == 1 and proc.pid not in o for o in owners), owners
        assert owners[0] != owners[1]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
