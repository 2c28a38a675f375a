"""What a serving process loads: not SQLAlchemy, SQLModel nor Alembic (the store's few
statements on the proxy's path are ``store.direct``'s; the ORM loads at the first admin or
history call, and Alembic only migrates), nor the other commands' code (the sync worker's HTTP
client, httpx, and its console libraries), nor Jinja2, which only the pages need (loaded at the
first page shown, ``gateway.ui.pages``), nor the OpenTelemetry SDK while tracing is off (redis-py
would import its metrics part: ``gateway.credits``), nor pydantic, pydantic-settings and
python-dotenv (the settings are validated before the server starts, and handed over:
``gateway.settings``), nor the JSON log formatter unless the logs are JSON, nor aiohttp (the
backends are called by ``gateway.proxy.upstream``). Some 40 MB of memory per worker (issue 16).

Checked in a fresh interpreter, as ``creditgate serve`` runs: the command line parsed, the
settings handed over, the store's schema checked, the app built and started; then it serves
what a proxying worker serves: the readiness probe, a proxied call (its key looked up in the
store) and the batch of ``last_used_at`` its key cache writes. Then an admin call, which loads
the ORM, and a page, which loads Jinja2 and compiles the templates: in a thread, never in the
event loop's (0.1 to 0.4 s of work that would hold every request).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.accounts.operations import create_account
from gateway.services import open_services
from gateway.settings import HANDOFF, Route, Settings
from store import repository
from store.database import create_db_engine, session, upgrade
from tests.support.gateways import free_port
from tests.support.processes import CREDITGATE, creditgate_env
from tests.support.stores import in_process_settings

SERVES = """
import asyncio, sys, threading
# Which of the ORM's and Jinja2's imports ran in the event loop's thread (none may: the loop
# would stop).
in_loop = []
sys.addaudithook(lambda event, args: event == "import"
                 and args[0] in ("sqlalchemy", "sqlmodel", "jinja2")
                 and threading.current_thread() is threading.main_thread()
                 and in_loop.append(args[0]))
from gateway.cli import SERVE_MODULE, build_parser, serving
from gateway.app import create_app
from gateway.services import check_redis, check_store
from gateway.settings import Settings

api_key, admin = sys.argv[1:]
argv = ["--log-level", "WARNING", "serve", "--port", "8081"]
assert serving(argv)
build_parser(SERVE_MODULE).parse_args(argv)
settings = Settings.handed_over()  # validated by the test, as `creditgate serve` does
check_redis(settings, "creditgate serve")
check_store(settings, "creditgate serve")
app = create_app(settings, server=True)


async def status_of(method, path, headers=()):
    sent = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"gw"), *headers],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8081)}
    body = [{"type": "http.request", "body": b"{}", "more_body": False}]
    async def receive():  # the body, then a client that stays connected
        return body.pop() if body else await asyncio.Event().wait()
    async def send(message):
        sent.append(message)
    await app(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


async def serve():
    async with app.router.lifespan_context(app):
        auth = [(b"authorization", b"Bearer " + api_key.encode())]
        statuses = [await status_of("GET", "/readyz")]
        statuses.append(await status_of("POST", "/api/projects/x", auth))
        await app.state.keys.flush_touched()
        loaded = sorted(m for m in watched if m in sys.modules)
        # The first admin call needs the ORM: imported then, in a thread.
        admin_auth = [(b"authorization", b"Bearer " + admin.encode())]
        statuses.append(await status_of("GET", "/admin/accounts", admin_auth))
        # The first page needs Jinja2 and the templates: also in a thread.
        statuses.append(await status_of("GET", "/dashboard"))
    return statuses, loaded

watched = ("aiohttp", "alembic", "dotenv", "httpx", "jinja2", "opentelemetry.sdk", "pydantic",
           "pydantic_settings", "pythonjsonlogger", "sqlalchemy", "sqlmodel", "sync")
statuses, loaded = asyncio.run(serve())
print(*statuses)
print(*loaded)
print("sqlalchemy" in sys.modules, "jinja2" in sys.modules, *in_loop)
"""


def test_a_serving_process_loads_no_orm_no_alembic_no_jinja2_nor_other_commands(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = in_process_settings(tmp_path, redis_url)
    services = open_services(settings)

    async def opened() -> tuple[str, str]:
        try:
            created = await create_account(services, reason="test")
            return created.api_key, created.account_id
        finally:
            await services.close()

    api_key, account_id = asyncio.run(opened())
    # A backend that is not there: the call is refunded (502) after its key was looked up.
    routes = [Route(prefix="/api/projects/", upstream="http://127.0.0.1:9")]
    admin = "import-test-admin-token-" + "a" * 16
    monkeypatch.setenv(HANDOFF, "")  # restored after the test
    served = Settings.load(
        database_url=settings.database_url, redis_url=redis_url, routes=routes, admin_token=admin
    )
    served.hand_over()
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", SERVES, api_key, admin],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", HANDOFF: os.environ[HANDOFF]},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    statuses, loaded, admin = (done.stdout.splitlines() + ["", "", ""])[:3]
    assert statuses.split() == ["200", "502", "200", "200"], done.stdout + done.stderr
    assert loaded.split() == [], done.stdout + done.stderr
    assert admin.split() == ["True", "True"], done.stdout + done.stderr  # not in the loop
    engine = create_db_engine(settings.database_url)
    try:
        with session(engine) as s:
            (key,) = repository.list_api_keys(s, account_id=account_id)
    finally:
        engine.dispose()
    assert key.last_used_at is not None  # the worker's touch reached the store


def test_only_serve_narrows_the_parser() -> None:
    from gateway.cli import serving

    assert serving(["serve"]) and serving(["--log-level", "DEBUG", "serve", "--workers", "2"])
    assert not serving(["sync"]) and not serving(["db", "upgrade"]) and not serving([])
    assert not serving(["--help"]) and not serving(["demo", "--port", "8080"])


def test_creditgate_serve_serves_in_a_process_that_never_loaded_pydantic(
    tmp_path: Path, redis_url: str
) -> None:
    """The command validates its settings with pydantic, then replaces itself (same pid) with
    an interpreter that runs on them, handed over: pydantic's library is not in its memory."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    env = creditgate_env(
        {"CREDITGATE_REDIS_URL": redis_url, "CREDITGATE_DATABASE_URL": url, "PYTHONPATH": str(root)}
    )
    argv = [*CREDITGATE, "--log-level", "WARNING", "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stderr=out)
    try:
        for _ in range(300):
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "pydantic_core" not in maps
        assert "uvloop" in maps  # the server runs in this very process
    finally:
        proc.terminate()
        proc.wait(30)
