"""``creditgate demo``: gateway, sync worker and both demo backends in one process.

Everything shares one asyncio loop and one ``Services``, because the embedded Redis
(fakeredis) lives in this process: a sync worker with its own client would see nothing. The
store is migrated at start, a demo account is created and its API key printed with ready
``curl`` lines. Ctrl-C (or SIGTERM) stops the gateway first, so in-flight calls still reach
their backend and settle, then the worker and the backends.

Ports: ``--port`` (gateway, default 8080), ``--codegen-port`` / ``--review-port`` (default:
the ports of ``CREDITGATE_CODEGEN_URL`` / ``CREDITGATE_REVIEW_URL``, 9101 / 9102); 0 picks a
free port, and the printed URLs say which.

``--backends-only`` runs just the two demo backends, checking signatures with
``CREDITGATE_SIGNING_SECRET`` (the gateways' own): the compose file's ``demo`` profile puts
them behind real replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import secrets
import shlex
import signal
import socket
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import uvicorn

from gateway.accounts.operations import CreatedAccount, create_account
from gateway.app import create_app
from gateway.demo.backends import codegen_app, review_app
from gateway.heads import bounded_http
from gateway.services import open_services
from gateway.settings import EMBEDDED, ConfigError, Route, Settings
from gateway.ui.sessions import SIGNIN_TTL_MS, SignIns
from store.database import upgrade
from sync.worker import SyncWorker

log = logging.getLogger("creditgate.demo")

GRACEFUL_SHUTDOWN_S = 5
OPENAI_PREFIX = "/v1/"
"""The demo's OpenAI-shaped route (``errors = "openai"``): ``/v1/chat/completions``, metered
(``pricing = "tokens"``: one credit per 2000 tokens, at most ``OPENAI_MAX_CREDITS`` a call)."""
OPENAI_MAX_CREDITS = 10
WORKER_STOP_S = 10.0
STOP_MARGIN_S = 10.0


class DemoError(Exception):
    """The demo cannot start; the message says why."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo", help="run gateway, sync worker and two demo backends in one process"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface for all three servers")
    parser.add_argument("--port", type=int, default=8080, help="gateway port (0: any free)")
    parser.add_argument("--codegen-port", type=int, default=None, help="codegen backend port")
    parser.add_argument("--review-port", type=int, default=None, help="review backend port")
    parser.add_argument("--tier", default="pro", help="tier of the demo account (default pro)")
    parser.add_argument(
        "--backends-only",
        action="store_true",
        help="run only the two demo backends (they verify CREDITGATE_SIGNING_SECRET)",
    )
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_demo(args, settings))
    except (DemoError, ConfigError) as exc:
        print(f"creditgate demo: {exc}", file=sys.stderr)
        return 1


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the demo, which stops all servers in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(slots=True)
class _Running:
    name: str
    server: _Server
    sock: socket.socket
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        """Graceful first (uvicorn drains for GRACEFUL_SHUTDOWN_S), then cancelled: bounded."""
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, GRACEFUL_SHUTDOWN_S + STOP_MARGIN_S)
        except TimeoutError:
            log.warning("the %s did not stop in time; cancelled", self.name)
        except DemoError:
            pass


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DemoError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def _start(
    name: str,
    app: Any,
    sock: socket.socket,
    *,
    lifespan: Literal["on", "off"] = "off",
    http: type[asyncio.Protocol] | str = "auto",
) -> _Running:
    config = uvicorn.Config(
        app,
        lifespan=lifespan,
        http=http,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = _Server(config)

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits when the app's startup fails
            raise DemoError(f"the {name} failed to start") from exc

    task = asyncio.create_task(serve(), name=f"demo-{name}")
    while not server.started:
        if task.done():
            await task
            raise DemoError(f"the {name} stopped during start")
        await asyncio.sleep(0.02)
    return _Running(name, server, sock, task)


def _port_of(url: str, fallback: int) -> int:
    return urlsplit(url).port or fallback


def demo_settings(
    settings: Settings, *, codegen_url: str, review_url: str, secret: str
) -> Settings:
    """The settings the demo runs on: embedded Redis, the backends it started, its secret.

    Rebuilt rather than copied so the routes follow the backends' actual ports: the two of the
    contract, and ``OPENAI_PREFIX`` to the codegen backend's ``chat/completions``, metered by
    tokens, with the gateway's errors in OpenAI's shape, for the OpenAI SDKs.
    """
    if settings.redis_url and not settings.embedded_redis:
        log.warning("the demo ignores CREDITGATE_REDIS_URL: it runs on the embedded Redis")
    values = {
        name: value
        for name, value in dataclasses.asdict(settings).items()
        if name not in ("routes", "config") and value is not None
    }
    values.update(
        redis_url=EMBEDDED,
        redis_cluster=False,
        codegen_url=codegen_url,
        review_url=review_url,
        signing_secret=secret,
        routes=[
            Route(prefix="/api/projects/", upstream=codegen_url),
            Route(prefix="/api/review/", upstream=review_url),
            Route(
                prefix=OPENAI_PREFIX,
                upstream=codegen_url,
                errors="openai",
                pricing="tokens",
                max_credits=OPENAI_MAX_CREDITS,
            ),
        ],
    )
    return Settings.load(**values)


class _Signals:
    """SIGINT / SIGTERM: the first stops everything in order, a second forces the servers."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.running: list[_Running] = []

    def __call__(self) -> None:
        if self.stop.is_set():
            log.warning("second signal: closing connections without waiting")
            for running in self.running:
                running.server.force_exit = True
        self.stop.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        handled = (signal.SIGINT, signal.SIGTERM)
        for sig in handled:
            loop.add_signal_handler(sig, self)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    if args.backends_only:
        return await _backends_only(args, settings)
    signals = _Signals()
    with signals.installed(), contextlib.ExitStack() as sockets:
        gateway_sock = sockets.enter_context(_bind(args.host, args.port))
        codegen_sock = sockets.enter_context(
            _bind(args.host, _port(args.codegen_port, settings.codegen_url, 9101))
        )
        review_sock = sockets.enter_context(
            _bind(args.host, _port(args.review_port, settings.review_url, 9102))
        )
        generated = settings.signing_secret is None
        secret = (settings.signing_secret or secrets.token_urlsafe(32)).encode()
        backends = signals.running
        try:
            codegen = await _start("codegen backend", codegen_app(secret), codegen_sock)
            backends.append(codegen)
            review = await _start("review backend", review_app(secret), review_sock)
            backends.append(review)
            run_settings = demo_settings(
                settings, codegen_url=codegen.url, review_url=review.url, secret=secret.decode()
            )
            await asyncio.to_thread(upgrade, run_settings.database_url)
            services = open_services(run_settings)
            try:
                account = await create_account(
                    services,
                    tier=args.tier,
                    months=0 if args.tier == "free" else 1,
                    reason="demo: account created by creditgate demo",
                )
                signin = await SignIns(services.redis).mint(account.account_id, account.key_id)
                app = create_app(run_settings, services=services)
                gateway = await _start(
                    "gateway", app, gateway_sock, lifespan="on", http=bounded_http(run_settings)
                )
                signals.running.insert(0, gateway)
                await _serve(
                    signals.stop,
                    gateway,
                    SyncWorker(services),
                    announce=lambda: _announce(
                        gateway.url,
                        codegen.url,
                        review.url,
                        account,
                        generated=generated,
                        signin=signin,
                    ),
                )
            finally:
                await services.close()
        finally:
            log.info("stopping the backends")
            for backend in backends:
                await backend.stop()
    print("creditgate demo: stopped", flush=True)
    return 0


async def _backends_only(args: argparse.Namespace, settings: Settings) -> int:
    """The two demo backends alone, for gateways running elsewhere with the same secret."""
    if not settings.signing_secret:
        raise DemoError(
            "--backends-only needs CREDITGATE_SIGNING_SECRET: the backends accept only calls "
            "signed with the gateways' secret"
        )
    secret = settings.signing_secret.encode()
    signals = _Signals()
    with signals.installed(), contextlib.ExitStack() as sockets:
        codegen_sock = sockets.enter_context(
            _bind(args.host, _port(args.codegen_port, settings.codegen_url, 9101))
        )
        review_sock = sockets.enter_context(
            _bind(args.host, _port(args.review_port, settings.review_url, 9102))
        )
        running = signals.running
        try:
            running.append(await _start("codegen backend", codegen_app(secret), codegen_sock))
            running.append(await _start("review backend", review_app(secret), review_sock))
            urls = "  ".join(f"{r.name} {r.url}" for r in running)
            print(f"creditgate demo backends are running: {urls}", flush=True)
            await signals.stop.wait()
        finally:
            for backend in running:
                await backend.stop()
    return 0


async def _serve(
    stop: asyncio.Event, gateway: _Running, worker: SyncWorker, *, announce: Callable[[], None]
) -> None:
    """Run the worker beside the gateway until a signal; stop the gateway, then the worker.

    The gateway goes first so calls in flight still reach their backend and settle; the
    worker then gets a bounded time to finish its pass (it is idempotent, so a cut pass is
    redone from the outbox by the next run).
    """
    worker_task = asyncio.create_task(worker.run(), name="demo-sync")
    announce()
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([stopped, gateway.task, worker_task], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    print("creditgate demo: stopping", flush=True)
    log.info("stopping the gateway")
    await gateway.stop()
    log.info("stopping the sync worker")
    worker.should_exit = True
    try:
        await asyncio.wait_for(worker_task, WORKER_STOP_S)
    except TimeoutError:
        log.warning("the sync worker did not stop within %s s; cancelled", WORKER_STOP_S)


def _port(flag: int | None, url: str, fallback: int) -> int:
    return flag if flag is not None else _port_of(url, fallback)


def openai_snippet(gateway: str, key: str) -> str:
    """Python that calls the demo's OpenAI-shaped route with the official SDK, ready to paste."""
    return "\n".join(
        [
            "python - <<'EOF'",
            "from openai import OpenAI",
            f'client = OpenAI(base_url="{gateway}{OPENAI_PREFIX.rstrip("/")}", api_key="{key}")',
            "reply = client.chat.completions.create(",
            '    model="creditgate-demo", messages=[{"role": "user", "content": "hello"}]',
            ")",
            "print(reply.choices[0].message.content, reply.usage)",
            "EOF",
        ]
    )


def _announce(
    gateway: str,
    codegen: str,
    review: str,
    account: CreatedAccount,
    *,
    generated: bool,
    signin: str = "",
) -> None:
    key = account.api_key
    auth = shlex.quote(f"Authorization: Bearer {key}")
    body = shlex.quote('{"prompt": "a todo app in Python"}')
    chat = shlex.quote(
        '{"model": "creditgate-demo", "messages": [{"role": "user", "content": "hi"}]}'
    )
    state = account.state
    lines = [
        "",
        "creditgate demo is running (Ctrl-C stops it)",
        f"  gateway   {gateway}",
        f"  codegen   {codegen}   (answers only calls signed by the gateway)",
        f"  review    {review}",
        f"  account   {account.account_id}  tier {state.tier}, {state.credits_remaining} credits",
        f"  api key   {key}",
        f"  dashboard {gateway}/dashboard   (sign in with the api key)",
    ]
    if signin:
        lines.append(
            f"  one-click {gateway}/dashboard/signin?token={signin}   "
            f"(works once, for {SIGNIN_TTL_MS // 60_000} minutes; the key is not in it)"
        )
    if generated:
        lines.append("  signing   secret generated for this run (set CREDITGATE_SIGNING_SECRET)")
    lines += [
        "",
        "Charged call (1 credit):",
        f"  curl -s {gateway}/api/projects/start-workflow -H {auth} "
        f"-H 'Content-Type: application/json' -d {body}",
        "Streaming call (SSE):",
        f"  curl -sN {gateway}/api/projects/stream -H {auth} "
        f"-H 'Content-Type: application/json' -d {body}",
        "Code review:",
        f"  curl -s {gateway}/api/review/generate -H {auth} "
        f"-H 'Content-Type: application/json' -d '{{\"code\": \"print(1)\"}}'",
        "Your balance (costs nothing):",
        f"  curl -s {gateway}/api/user/usage -H {auth}",
        "A failing backend is refunded: add -H 'X-Demo-Fail: 500' to a call.",
        "A key of your own with limits (2 credits a month, review only; its secret shown once):",
        f"  curl -s {gateway}/api/user/keys -H {auth} -H 'Content-Type: application/json' "
        '-d \'{"name": "ci", "creditLimit": 2, "routes": ["/api/review"]}\'',
        "",
        "OpenAI-compatible chat completion (/v1/: charged by its tokens, 1 credit per 2000, "
        "errors in OpenAI's shape):",
        f"  curl -s {gateway}{OPENAI_PREFIX}chat/completions -H {auth} "
        f"-H 'Content-Type: application/json' "
        f"-d {chat}",
        "OpenAI SDK (pip install openai):",
        openai_snippet(gateway, key),  # not indented: pasted whole into a shell
        "",
    ]
    print("\n".join(lines), flush=True)
