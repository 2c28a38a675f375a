"""``creditgate demo`` as a user runs it: one process, printed key, charged calls, Ctrl-C.

The demo binds port 0 for all three servers and prints the URLs, so the test needs no port
guessing. It runs on the embedded Redis (no ``CREDITGATE_REDIS_URL``) and a SQLite store in a
temporary directory, which the test reads to see the sync worker shared the app's Services.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.demo.backends import token_usage
from store import repository
from store.database import create_db_engine, session
from store.records import LedgerRecord
from tests.support.processes import CREDITGATE, creditgate_env
from tests.support.rawhttp import connect, read_answers, request

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
SYNC_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Demo:
    proc: asyncio.subprocess.Process
    gateway: str
    codegen: str
    account_id: str
    api_key: str
    database_url: str
    log: Path
    announcement: str

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


async def _read_announcement(stdout: asyncio.StreamReader) -> str:
    """What the demo prints, up to the end of its OpenAI SDK snippet (the line ``EOF``)."""
    lines: list[str] = []
    while not lines or lines[-1].rstrip() != "EOF":
        line = await stdout.readline()
        if not line:
            raise AssertionError("demo exited before its announcement:\n" + "".join(lines))
        lines.append(line.decode())
    return "".join(lines)


def _field(text: str, name: str) -> str:
    match = re.search(rf"^\s+{name}\s+(\S+)", text, re.MULTILINE)
    assert match is not None, f"no {name!r} line in:\n{text}"
    return match[1]


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    database_url = f"sqlite:///{tmp_path / 'demo.db'}"
    env = creditgate_env(
        {"CREDITGATE_DATABASE_URL": database_url, "CREDITGATE_SYNC_INTERVAL": "0.2"}
    )
    with (tmp_path / "stderr.log").open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *CREDITGATE, "demo",
            "--port", "0", "--codegen-port", "0", "--review-port", "0",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        text = await asyncio.wait_for(_read_announcement(proc.stdout), START_TIMEOUT_S)
        yield Demo(
            proc=proc,
            gateway=_field(text, "gateway"),
            codegen=_field(text, "codegen"),
            account_id=_field(text, "account"),
            api_key=_field(text, "api key"),
            database_url=database_url,
            log=tmp_path / "stderr.log",
            announcement=text,
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _ledger(database_url: str, account_id: str) -> list[LedgerRecord]:
    engine = create_db_engine(database_url)
    try:
        with session(engine) as s:
            return repository.ledger_page(s, account_id=account_id, limit=100)
    finally:
        engine.dispose()


async def test_demo_charges_streams_syncs_and_stops_on_sigint(demo: Demo) -> None:
    assert re.fullmatch(r"cg_[A-Za-z0-9_-]{32,}", demo.api_key)
    json_body = b'{"prompt": "a todo app"}'
    sse_body = b'{"prompt": "stream a parser, please"}'
    auth = {"Authorization": f"Bearer {demo.api_key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=demo.gateway, headers=auth, timeout=30) as client:
        charged = await client.post("/api/projects/start-workflow", content=json_body)
        assert charged.status_code == 200
        assert charged.headers["x-credits-charged"] == "1"
        assert charged.json()["usage"] == token_usage(json_body)
        assert charged.json()["creditInfo"]["creditsRemaining"] == 99

        async with client.stream("POST", "/api/projects/stream", content=sse_body) as stream:
            assert stream.status_code == 200
            events = [
                line[len("data: ") :]
                async for line in stream.aiter_lines()
                if line.startswith("data: ")
            ]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["usage"] == token_usage(sse_body)

        usage = (await client.get("/api/user/usage")).json()["usage"]
        tokens = token_usage(json_body)["total_tokens"] + token_usage(sse_body)["total_tokens"]
        assert (usage["creditsRemaining"], usage["totalTokensUsed"]) == (98, tokens)

    async with httpx.AsyncClient(base_url=demo.codegen) as direct:
        unsigned = await direct.post("/api/projects/start-workflow", content=json_body)
    assert unsigned.status_code == 401  # the backend only answers what the gateway signed

    deadline = time.monotonic() + SYNC_TIMEOUT_S
    charges: list[LedgerRecord] = []
    while len(charges) < 2:
        assert time.monotonic() < deadline, f"no charges in the store:\n{demo.log_tail()}"
        await asyncio.sleep(0.1)
        ledger = await asyncio.to_thread(_ledger, demo.database_url, demo.account_id)
        charges = [entry for entry in ledger if entry.kind == "charge"]
    assert sorted(entry.tokens for entry in charges) == sorted(
        token_usage(body)["total_tokens"] for body in (json_body, sse_body)
    )

    demo.proc.send_signal(signal.SIGINT)
    try:
        code = await asyncio.wait_for(demo.proc.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        pytest.fail(f"demo did not stop on SIGINT; its log:\n{demo.log_tail()}")
    assert code == 0, demo.log_tail()
    assert demo.proc.stdout is not None
    assert b"creditgate demo: stopped" in await demo.proc.stdout.read()


async def test_the_demo_gateway_bounds_request_heads(demo: Demo) -> None:
    pads = [(f"X-Pad-{i}", "v") for i in range(100)]  # with Host, one over the default 100
    auth = ("Authorization", f"Bearer {demo.api_key}")
    head = request("/api/projects/start-workflow", [("Host", "demo"), auth, *pads])

    def refused() -> list[int]:
        with connect(demo.gateway) as sock:
            sock.sendall(head)
            return [answer.status for answer in read_answers(sock, 1).answers]

    assert await asyncio.to_thread(refused) == [431]
    async with httpx.AsyncClient(base_url=demo.gateway, timeout=30) as client:
        usage = await client.get("/api/user/usage", headers=[auth])
    assert usage.json()["usage"]["creditsRemaining"] == 100


async def test_the_printed_openai_snippet_works_as_pasted(demo: Demo) -> None:
    """The SDK snippet, pasted into a shell as printed: a completion through the demo's
    OpenAI-shaped route, charged like any call."""
    start = demo.announcement.index("python - <<'EOF'")
    snippet = demo.announcement[start:]
    assert f'base_url="{demo.gateway}/v1"' in snippet and demo.api_key in snippet
    venv_bin = str(Path(sys.executable).parent)
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        snippet,
        env={"PATH": f"{venv_bin}:/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(shell.communicate(), START_TIMEOUT_S)
    assert shell.returncode == 0, err.decode()
    assert "Plan for: hello" in out.decode() and "total_tokens=" in out.decode()
    async with httpx.AsyncClient(base_url=demo.gateway, timeout=30) as client:
        usage = await client.get(
            "/api/user/usage", headers=[("Authorization", f"Bearer {demo.api_key}")]
        )
    assert usage.json()["usage"]["creditsRemaining"] == 99


async def test_the_printed_key_line_makes_a_limited_key(demo: Demo) -> None:
    """The printed curl that makes a key of the demo account's own, run as printed: the new
    key may call the review route only, and spend 2 credits a month."""
    lines = demo.announcement.splitlines()
    printed = lines[lines.index(next(x for x in lines if x.startswith("A key of your own"))) + 1]
    shell = await asyncio.create_subprocess_exec(
        "bash", "-c", printed.strip(), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(shell.communicate(), START_TIMEOUT_S)
    made = json.loads(out)
    assert made["key"]["creditLimit"] == 2 and made["key"]["routes"] == ["/api/review"]
    auth = {"Authorization": f"Bearer {made['apiKey']}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=demo.gateway, headers=auth, timeout=30) as client:
        outside = await client.post("/api/projects/start-workflow", content=b"{}")
        assert (outside.status_code, outside.json()["error"]) == (403, "route_not_allowed")
        review = [await client.post("/api/review/generate", content=b"{}") for _ in range(3)]
    assert [r.status_code for r in review] == [200, 200, 429]
    assert review[2].json()["error"] == "key_credit_limit"
