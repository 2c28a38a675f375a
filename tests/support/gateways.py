"""Gateway replicas as uvicorn processes and the stub backends they forward to, for e2e tests.

The fixtures that build them live in tests/e2e/conftest.py; its docstring says what each does."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from gateway.services import Services
from gateway.settings import Settings
from gateway.signing import SignatureError, verify
from tests.support.processes import CREDITGATE

SIGNING_SECRET = "e2e-signing-secret-" + "x" * 16


ADMIN_TOKEN = "e2e-admin-token-" + "y" * 16


REPLICAS = 3


START_TIMEOUT_S = 30.0


WAIT_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    backend: str


@dataclass
class StubBackend:
    """An upstream that records what reached it; runs on the ``BackendThread``'s loop."""

    name: str
    url: str = ""
    hits: int = 0
    seen: dict[str, Seen] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def release(self, token: str) -> None:
        """Let a waiting ``sse`` or ``hang`` request of ``token`` go on (thread-safe)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._gate(token).set)

    def _gate(self, token: str) -> asyncio.Event:
        return self.gates.setdefault(token, asyncio.Event())

    def hits_now(self) -> int:
        with self.lock:
            return self.hits

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            verify(SIGNING_SECRET.encode(), headers, request.method, request.path)
            ok = True
        except SignatureError:
            ok = False
        rid = headers.get("x-gateway-request-id", f"unsigned-{uuid.uuid4().hex}")
        with self.lock:
            self.hits += 1
            self.seen[rid] = Seen(
                request.method, request.path, request.query_string, headers, body, ok, self.name
            )
        what = request.path.rstrip("/").rsplit("/", 1)[-1]
        token = request.query.get("token", "")
        if what == "json":
            tokens = int(request.query.get("tokens", "1234"))
            return web.json_response(
                {"backend": self.name, "echo": body.decode(), "usage": {"total_tokens": tokens}}
            )
        if what == "nousage":
            extra = (
                {"X-Tokens-Used": request.query["htokens"]} if "htokens" in request.query else {}
            )
            return web.json_response({"backend": self.name}, headers=extra)
        if what == "list":
            return web.json_response([1, 2, 3])
        if what == "plain":
            return web.Response(text="hello", headers={"X-Tokens-Used": "77"})
        if what == "status":
            code = int(request.query.get("code", "500"))
            return web.json_response({"error": f"status {code}"}, status=code)
        if what == "hang":
            self.started.add(token)
            await asyncio.wait_for(self._gate(token).wait(), 30)
            return web.json_response({"late": True})
        if what == "sse":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b'data: {"delta": "first"}\n\n')
            await asyncio.wait_for(self._gate(token).wait(), WAIT_TIMEOUT_S)
            await response.write(b'data: {"delta": "last", "usage": {"total_tokens": 4321}}\n\n')
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response(
            {
                "backend": self.name,
                "method": request.method,
                "path": request.path,
                "query": request.rel_url.raw_query_string,
                "body": body.decode(errors="replace"),
            }
        )


class BackendThread:
    """Runs stub backends on their own event loop in a daemon thread."""

    def __init__(self, backends: list[StubBackend]) -> None:
        self.backends = backends
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runners: list[web.AppRunner] = []

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(WAIT_TIMEOUT_S)

    async def _start(self) -> None:
        for backend in self.backends:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", backend.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            backend.url = f"http://127.0.0.1:{port}"
            backend.loop = self.loop
            self.runners.append(runner)

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self.runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(WAIT_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_TIMEOUT_S)
        self.loop.close()


@dataclass
class Backends:
    codegen: StubBackend
    review: StubBackend

    def find(self, request_id: str) -> Seen | None:
        for backend in (self.codegen, self.review):
            with backend.lock:
                if request_id in backend.seen:
                    return backend.seen[request_id]
        return None


@dataclass
class GatewayCluster:
    urls: list[str]
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]


def start_replica(
    env: dict[str, str], workdir: Path, log_name: str, *options: str, port: int | None = None
) -> tuple[str, subprocess.Popen[bytes], Path]:
    """``creditgate serve`` with ``options`` on ``port`` (default: a free one) of 127.0.0.1,
    its output in ``workdir / log_name``: its URL, process and log (``wait_ready`` waits for
    it). It leads a process group of its own, with its workers: ``os.killpg`` kills them all."""
    port = port or free_port()
    log = workdir / log_name
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CREDITGATE, "--log-level", "WARNING", "serve", "--host", "127.0.0.1"]
            + ["--port", str(port), *options],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return f"http://127.0.0.1:{port}", proc, log


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gateway at {url} not ready: {log.read_text()[-2000:]}")


def stop_procs(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.load(
        redis_url=env["CREDITGATE_REDIS_URL"],
        database_url=env["CREDITGATE_DATABASE_URL"],
        config=Path(env["CREDITGATE_CONFIG"]),
        signing_secret=env["CREDITGATE_SIGNING_SECRET"],
    )


@dataclass(frozen=True)
class NewAccount:
    account_id: str
    api_key: str
    key_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout: float = WAIT_TIMEOUT_S
) -> None:
    """Poll ``check`` until it holds; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


def body_json(response: httpx.Response) -> Any:
    return json.loads(response.content)


async def wait_settled(services: Services, account_id: str, *, total_tokens: int) -> None:
    """Wait until the account's settles have landed: the gateway settles right after it has
    answered, so a test reading Redis at once may be a round trip early."""

    async def landed() -> bool:
        state = await services.credits.status(account_id)
        return state is not None and state.total_tokens == total_tokens

    await wait_for(landed)


async def credits_left(services: Services, account_id: str) -> int:
    """What the account holds in Redis now (plan and bonus credits)."""
    state = await services.credits.status(account_id)
    assert state is not None
    return state.credits_remaining
