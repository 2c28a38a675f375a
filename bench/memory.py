"""Memory benchmark: the gateway's resident memory under inputs built to make it grow.

One real ``creditgate serve`` process (one worker, Redis db 12 or
``CREDITGATE_BENCH_REDIS_URL``, emptied first; a SQLite store in a temporary directory) in
front of an in-process aiohttp backend. Its memory is read from ``/proc/<pid>/status``:
``VmRSS`` (resident now) and ``VmHWM`` (the highest resident so far), idle, then during
(sampled every 20 ms) and after each attack:

1. an unfinished header block: ``--head-mb`` MB (default 300) of header lines that never end,
   sent as fast as the gateway takes them, until it answers (431) and closes the connection;
2. the same as one header line that never ends;
3. a ``--body-mb`` MB (default 50) JSON answer without ``Content-Length`` (chunked) from the
   backend, read by the client as it streams.

The gateway answers 431 at its header limits and then reads (and discards) what still arrives
for a short while before it closes (``gateway.heads``), so the attacker gets to send it all.
A chunked JSON answer is buffered up to ``gateway.proxy.relay.JSON_LIMIT`` (1 MiB) to add
``creditInfo``, then streams: its peak is bounded by that limit, not by the answer's size.

The account is opened by this script, so that the gateway serves proxied calls only, as a
worker does: its idle figure is a serving worker's. Printed: each figure and its increase
over idle, and how many bytes each attack got to send; then the same after one admin call,
which loads the ORM into the process (by design, at the first admin, history or page call).
Before issue 12 the first grew the gateway one-for-one (+300 MB) and the third by 251 MB.
Nothing asserts: the figures are for people (``make bench`` prints them).
Run: ``python bench/memory.py [--head-mb 300] [--body-mb 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp
import redis
from aiohttp import web

from tests.support.gateways import free_port
from tests.support.processes import CREDITGATE, creditgate_env

REDIS_URL = os.environ.get("CREDITGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
ADMIN_TOKEN = "memory-bench-admin-" + "m" * 16
MB = 1_048_576


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid``, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def growth(pid: int, peak: int, idle: int, idle_hwm: int) -> str:
    """A table row's last cells: the peak RSS during an attack, RSS after it, VmHWM."""
    after = memory(pid)[0]
    return (
        f"| {peak / MB:.1f} MB (+{(peak - idle) / MB:.1f}) "
        f"| {after / MB:.1f} MB (+{(after - idle) / MB:.1f}) | {hwm(pid, idle_hwm)} |"
    )


def hwm(pid: int, idle_hwm: int) -> str:
    high = memory(pid)[1]
    return f"{high / MB:.1f} MB (+{(high - idle_hwm) / MB:.1f})"


class Sampler:
    """The highest ``VmRSS`` of ``pid`` while it runs (a thread, every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, memory(self.pid)[0])
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, memory(self.pid)[0])


async def unfinished_head(port: int, total: int, *, one_line: bool) -> tuple[int, bytes]:
    """Send a request head that never ends, up to ``total`` bytes; (bytes sent, the start of
    what the gateway answered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/projects/x HTTP/1.1\r\nHost: bench\r\n")
    if one_line:
        writer.write(b"X-Long: ")
    chunk = (b"a" * 65536) if one_line else (b"X-Pad: " + b"a" * 1015 + b"\r\n") * 64
    sent = 0
    try:
        while sent < total:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
    except (ConnectionError, OSError):
        pass
    answer = b""
    with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
        answer = await asyncio.wait_for(reader.read(200), 5)
    writer.transport.abort()
    return sent, answer.split(b"\r\n", 1)[0]


async def big_answer(url: str, api_key: str, path: str = "big") -> tuple[int, int, str]:
    """Read the backend's big chunked JSON through the gateway: (status, bytes, charged)."""
    received = 0
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/projects/{path}", headers=headers) as r,
    ):
        async for chunk in r.content.iter_chunked(65536):
            received += len(chunk)
        return r.status, received, r.headers.get("X-Credits-Charged", "")


async def serve_backend(body_mb: int) -> web.AppRunner:
    async def big(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/small"):
            return web.json_response({"usage": {"total_tokens": 10}})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"usage": {"total_tokens": 10}, "data": "')
        piece = b"x" * 65536
        for _ in range(body_mb * 16):
            await response.write(piece)
        await response.write(b'"}')
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", big)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def start_gateway(workdir: Path, upstream: str) -> tuple[subprocess.Popen[bytes], str]:
    config = workdir / "creditgate.toml"
    config.write_text(f'[[routes]]\nprefix = "/api/projects/"\nupstream = "{upstream}"\n')
    env = creditgate_env(
        {
            "CREDITGATE_REDIS_URL": REDIS_URL,
            "CREDITGATE_DATABASE_URL": f"sqlite:///{workdir / 'store.db'}",
            "CREDITGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "CREDITGATE_SIGNING_SECRET": "memory-bench-secret-" + "s" * 16,
            "CREDITGATE_CONFIG": str(config),
        }
    )
    subprocess.run([*CREDITGATE, "db", "upgrade"], env=env, check=True, capture_output=True)
    port = free_port()
    log = (workdir / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [*CREDITGATE, "--log-level", "WARNING", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


async def open_account(workdir: Path) -> str:
    """An API key of a fresh enterprise account, opened by this script in the gateway's Redis
    and store: the gateway then serves proxied calls only, as a worker does (an admin call
    would load the ORM into it, measured apart at the end)."""
    from gateway.accounts.operations import create_account
    from gateway.services import open_services
    from gateway.settings import Settings

    url = f"sqlite:///{workdir / 'store.db'}"
    services = open_services(Settings.load(redis_url=REDIS_URL, database_url=url))
    try:
        return (await create_account(services, tier="enterprise", reason="bench")).api_key
    finally:
        await services.close()


async def ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait for the gateway."""
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("the gateway exited at start")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)


async def admin_call(url: str) -> int:
    """One admin call (a list of accounts): the status."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/admin/accounts", headers=headers) as r,
    ):
        await r.read()
        return r.status


async def run(args: argparse.Namespace) -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()
    backend = await serve_backend(args.body_mb)
    upstream = f"http://127.0.0.1:{backend.addresses[0][1]}"
    with tempfile.TemporaryDirectory(prefix="creditgate-memory-") as tmp:
        proc, url = start_gateway(Path(tmp), upstream)
        try:
            key = await open_account(Path(tmp))
            await ready(url, proc)
            port = int(url.rsplit(":", 1)[1])
            await big_answer(url, key, "small")  # warm up: a first call's allocations
            await asyncio.sleep(0.5)
            idle, idle_hwm = memory(proc.pid)
            print(
                f"gateway pid {proc.pid}: idle VmRSS {idle / MB:.1f} MB, "
                f"VmHWM {idle_hwm / MB:.1f} MB"
            )
            print(
                "| attack | sent / read | answer | peak VmRSS (+idle) | after VmRSS (+idle) "
                "| VmHWM after (+idle's) |"
            )
            print("| --- | --- | --- | --- | --- | --- |")
            attacks: list[tuple[str, Callable[[], Awaitable[tuple[int, bytes]]]]] = [
                (
                    f"unfinished header block, {args.head_mb} MB of lines",
                    lambda: unfinished_head(port, args.head_mb * MB, one_line=False),
                ),
                (
                    f"unfinished header line, {args.head_mb} MB",
                    lambda: unfinished_head(port, args.head_mb * MB, one_line=True),
                ),
            ]
            for name, attack in attacks:
                with Sampler(proc.pid) as sampler:
                    sent, answer = await attack()
                await asyncio.sleep(0.5)
                print(
                    f"| {name} | {sent / MB:.2f} MB | {answer.decode(errors='replace')} "
                    + growth(proc.pid, sampler.peak, idle, idle_hwm)
                )
            with Sampler(proc.pid) as sampler:
                status, received, charged = await big_answer(url, key)
            await asyncio.sleep(0.5)
            print(
                f"| chunked JSON answer, {args.body_mb} MB | {received / MB:.1f} MB "
                f"| {status}, charged {charged} " + growth(proc.pid, sampler.peak, idle, idle_hwm)
            )
            status = await admin_call(url)
            await asyncio.sleep(0.5)
            after = memory(proc.pid)[0]
            print(
                f"\nafter one admin call ({status}; it loads the ORM, in a thread, as the first "
                f"admin, history or page call does): VmRSS {after / MB:.1f} MB "
                f"(+{(after - idle) / MB:.1f}), VmHWM {hwm(proc.pid, idle_hwm)}"
            )
        finally:
            proc.terminate()
            proc.wait(30)
            await backend.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--head-mb", type=int, default=300)
    parser.add_argument("--body-mb", type=int, default=50)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
