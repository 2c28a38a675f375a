"""``make proof``: mixed load on a whole deployment while faults are injected, then a
reconciliation that must come out exact. Bounded and self-stopping; exit 1 if it does not.

The deployment, all on loopback and all of its own: a ``redis-server`` with AOF
(``appendfsync always``: every write the gateway was told of is on disk before the reply, so
the proof's claim would survive a power cut too; a process kill alone loses nothing with
``everysec`` either, as the write precedes the reply), a fresh PostgreSQL database (created,
migrated with ``creditgate db upgrade`` and dropped by the run) reached through a TCP
forwarder the run can cut, 3 ``creditgate serve`` replicas, 2 ``creditgate sync`` workers
(sync every 0.5 s; upstream timeout 3 s and reservation grace 2 s, so the reaper refunds a
dead replica's holds within seconds), and a misbehaving backend (``bench/proving/backend.py``)
that logs every request id it served and the tokens it reported.

Routes: three flat-priced ones and a metered one (``/api/llm/``: ``pricing = "tokens"``,
``max_credits = 8``, cost 1), whose calls ask the backend for a random number of tokens (up to
20,000, beyond what 8 credits pay for) and some name ``max_tokens`` in their body.

Load (``bench/proving/load.py``): accounts of every tier, many concurrent clients, JSON and
SSE, failures, slow and abandoned calls, broken streams, timeouts, Idempotency-Key retries,
and an operator granting credits and changing tiers (each admin write retried with its
Idempotency-Key until it has a definite answer). Six accounts in seven get a second key with
limits of its own (``limits``: a creditLimit below the tier's credits, alone or with a rate or
routes; a rate; routes; an expiry 40 % into the run), which their clients use for about half
their calls. Faults, at fixed fractions of the run:
SIGKILL a replica and start it again, SIGKILL a sync worker and restart it, SIGKILL Redis and
restart it on its AOF, cut PostgreSQL (the forwarder) for a while, slow the backend down,
SIGKILL another replica. Then the run settles: replicas stopped, the reaper's deadline passed,
the outbox synced; the sync workers stop.

The figures (``bench/proving/reconcile.py`` defines the rules request id by request id):

- requests: proxied calls the clients made (each attempt of a retry counts); 2xx, 429 by
  reason, 5xx by code, 4xx, abandoned (the client closed the connection), no answer (the
  connection failed or was cut: a killed replica, Redis down under a reserve...);
- uncertain: attempts whose outcome the client cannot know (abandoned, no answer, an
  incomplete stream, or on a replica killed during or within 0.5 s after the call): either
  close is allowed for them, exactly one;
- holds / charges / refunds / reaped: the ledger's rows (reaped: refunds by the reaper);
- overspend: credits charged to an account beyond what it ever had (opening balance, grants,
  plan credits added by resets and tier changes), from the ledger's charges and from what
  clients were told (``X-Credits-Charged``); and any negative balance;
- unaccounted: a hold not closed exactly once; a charge without a 2xx the backend's own log
  shows; a client told of a charge (a whole 2xx answer, ``X-Credits-Charged`` > 0) that the
  ledger lacks, or a charge the ledger has for a client told otherwise; a request that
  reached the backend without a hold; a 429 that reached the backend;
- metered: the metered route's requests and charges, the tokens the backend reported and
  those the charges paid for (at most 2000 per credit), the credits held and charged; each
  charge must be ``ceil(tokens / 2000)`` within cost..held (unaccounted otherwise), and no
  account may pay for more tokens than 2000 per credit it had (overspend otherwise);
- limited keys: their requests and what their charges cost, and the key refusals by reason;
  a key's charges beyond its creditLimit are overspend; a key refusal that reached the backend
  or held, an answered call outside a key's routes other than 403 (or 503), a call served
  after its key expired, a ledger row without the key and route the client sent: unaccounted;
- differences: ``creditgate audit``'s (Redis vs the store's snapshot vs the ledger's sums,
  account by account), grants answered 2xx vs the ledger's grants per account, admin writes
  without a definite answer, ledger request ids no client call can explain.

Run: ``python bench/proof.py [--duration 180] [--short] [--seed N] [--keep]``. It needs
``redis-server`` on the PATH and a PostgreSQL server where ``postgres`` may create databases
(``CREDITGATE_BENCH_PG_SERVER``, default ``postgresql+psycopg://postgres@127.0.0.1:5432``):
``.ci/services`` provides both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp
import redis.asyncio as aioredis
from sqlalchemy import create_engine, text

from bench.proving.backend import Backend
from bench.proving.load import COST, METERED, Account, Key, Load
from bench.proving.reconcile import Verdict, reconcile
from gateway.credits import keys
from gateway.services import open_services
from gateway.settings import Settings
from store.database import normalize_url
from sync.audit import audit
from tests.support.forwarder import Forwarder
from tests.support.gateways import free_port
from tests.support.processes import CREDITGATE, creditgate_env

KEY_REFUSALS_SHOWN = ("key_expired", "route_not_allowed", "key_credit_limit", "key_rate_limited")
PG_SERVER = os.environ.get(
    "CREDITGATE_BENCH_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432"
)
ADMIN_TOKEN = "proof-admin-token-" + "a" * 16
SIGNING_SECRET = "proof-signing-secret-" + "s" * 16
TIERS = {"free": 6, "pro": 10, "enterprise": 4}
"""Accounts per tier."""


@dataclass
class Deployment:
    workdir: Path
    redis_port: int
    pg_url: str
    """Through the forwarder: what the replicas and workers use."""
    direct_url: str
    """Straight to PostgreSQL: the run's own blocking reads (the forwarder runs in its loop)."""
    forwarder: Forwarder
    env: dict[str, str] = field(default_factory=dict)
    redis: subprocess.Popen[bytes] | None = None
    replicas: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    kills: list[tuple[int, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:6.1f}s  {what}"
        self.events.append(line)
        print(line, flush=True)

    # -- processes --------------------------------------------------------------------------

    def start_redis(self) -> None:
        out = (self.workdir / "redis.log").open("ab")
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"]
            + ["--dir", str(self.workdir), "--save", "", "--appendonly", "yes"]
            + ["--appendfsync", "always", "--daemonize", "no"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def wait_redis(self) -> None:
        client = aioredis.Redis(port=self.redis_port)
        try:
            await wait(client.ping, f"redis on {self.redis_port}")
        finally:
            await client.aclose()

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        out = (self.workdir / f"{name}.log").open("ab")
        return subprocess.Popen(
            [*CREDITGATE, "--log-level", "WARNING", *args],
            env=self.env,
            cwd=self.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_replica(self, index: int) -> None:
        port = str(self.ports[index])
        proc = self._spawn(f"replica-{index}", "serve", "--host", "127.0.0.1", "--port", port)
        self.replicas[index] = proc

    def start_worker(self, index: int) -> None:
        self.workers[index] = self._spawn(f"sync-{index}", "sync")

    async def wait_replica(self, index: int) -> None:
        url = f"http://127.0.0.1:{self.ports[index]}/healthz"

        async def up() -> bool:
            async with aiohttp.ClientSession() as s, s.get(url) as r:
                return r.status == 200

        await wait(up, f"replica {index}")

    def kill(self, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    async def terminate(self, procs: list[subprocess.Popen[bytes] | None]) -> None:
        """SIGTERM, then at most 40 s (the gateway's own bound is 30 s) before a SIGKILL,
        said. Awaited, never blocking: the forwarder to PostgreSQL runs in this loop."""
        running = [p for p in procs if p is not None and p.poll() is None]
        for proc in running:
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for proc in running:
            if proc.poll() is None:
                self.note(f"pid {proc.pid} ignored SIGTERM for 40 s: killed")
                self.kill(proc)


async def wait(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if await check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not up within {timeout} s")
        await asyncio.sleep(0.1)


# -- faults ---------------------------------------------------------------------------------


async def kill_replica(dep: Deployment, index: int) -> None:
    dep.kills.append((index, time.monotonic()))
    dep.kill(dep.replicas[index])
    dep.note(f"SIGKILL replica {index} (monotonic {time.monotonic():.2f})")
    await asyncio.sleep(2)
    dep.start_replica(index)
    await dep.wait_replica(index)
    dep.note(f"replica {index} back")


async def kill_worker(dep: Deployment) -> None:
    dep.kill(dep.workers[0])
    dep.note("SIGKILL sync worker 0")
    await asyncio.sleep(2)
    dep.start_worker(0)
    dep.note("sync worker 0 restarted")


async def restart_redis(dep: Deployment) -> None:
    dep.kill(dep.redis)
    dep.note("SIGKILL redis")
    await asyncio.sleep(1)
    dep.start_redis()
    await dep.wait_redis()
    dep.note("redis back (AOF)")


async def cut_database(dep: Deployment, seconds: float) -> None:
    await dep.forwarder.cut()
    dep.note(f"PostgreSQL cut for {seconds:.0f} s")
    await asyncio.sleep(seconds)
    await dep.forwarder.restore()
    dep.note("PostgreSQL restored")


async def slow_backend(dep: Deployment, backend: Backend, seconds: float) -> None:
    backend.slow = 1.5
    dep.note(f"backend slowed by 1.5 s for {seconds:.0f} s")
    await asyncio.sleep(seconds)
    backend.slow = 0.0
    dep.note("backend at speed again")


async def faults(dep: Deployment, backend: Backend, duration: float) -> None:
    window = min(15.0, max(4.0, duration * 0.1))
    plan: list[tuple[float, Callable[[], Awaitable[None]]]] = [
        (0.15, lambda: kill_replica(dep, 0)),
        (0.28, lambda: kill_worker(dep)),
        (0.40, lambda: restart_redis(dep)),
        (0.55, lambda: cut_database(dep, window)),
        (0.72, lambda: slow_backend(dep, backend, window)),
        (0.85, lambda: kill_replica(dep, 2)),
    ]
    start = time.monotonic()
    for at, fault in plan:
        await asyncio.sleep(max(0.0, start + at * duration - time.monotonic()))
        await fault()


# -- the run --------------------------------------------------------------------------------


def create_database(name: str) -> None:
    admin = create_engine(normalize_url(f"{PG_SERVER}/postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def drop_database(name: str) -> None:
    admin = create_engine(normalize_url(f"{PG_SERVER}/postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def write_config(workdir: Path, upstream: str) -> Path:
    config = workdir / "creditgate.toml"
    config.write_text(
        "\n".join(
            f'[[routes]]\nprefix = "{prefix}"\nupstream = "{upstream}"\ncost = {cost}\n'
            + (
                f'pricing = "tokens"\nmax_credits = {METERED[prefix]}\n'
                if prefix in METERED
                else ""
            )
            for prefix, cost in COST.items()
        )
    )
    return config


def limits(index: int, tier: str, duration: float) -> dict[str, Any] | None:
    """The limits of the ``index``-th account's second key, by turns (None: no second key):
    a credit limit below the tier's credits (alone, with a rate, with routes), a rate alone,
    routes alone, an expiry within the run."""
    below = {"free": 2, "pro": 12, "enterprise": 40}[tier]
    turns: list[dict[str, Any] | None] = [
        {"creditLimit": below},
        {"requestsPerMinute": 12},
        {"routes": ["/api/review", "/api/llm"]},
        {"creditLimit": below, "routes": ["/api/llm"]},
        {"creditLimit": below, "requestsPerMinute": 30},
        {"expiresAt": duration * 0.4},
        None,
    ]
    return turns[index % len(turns)]


async def make_key(
    session: aiohttp.ClientSession, url: str, account: Account, rules: dict[str, Any]
) -> Key:
    """A second key for ``account`` with ``rules`` (``expiresAt``: seconds from now)."""
    body = {"name": "proof limited"} | rules
    expires = None
    if "expiresAt" in rules:
        expires = time.monotonic() + rules["expiresAt"]
        at = datetime.now(UTC) + timedelta(seconds=rules["expiresAt"])
        body["expiresAt"] = at.isoformat()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with session.post(
        f"{url}/admin/accounts/{account.account_id}/keys", json=body, headers=headers
    ) as r:
        answer = await r.json()
        assert r.status == 201, answer
    routes = rules.get("routes")
    return Key(
        answer["keyId"],
        answer["apiKey"],
        rules.get("creditLimit"),
        rules.get("requestsPerMinute"),
        tuple(routes) if routes else None,
        expires,
    )


async def open_accounts(
    dep: Deployment, url: str, rng: random.Random, duration: float
) -> list[Account]:
    accounts: list[Account] = []
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as session:
        for tier, count in TIERS.items():
            for _ in range(count):
                body: dict[str, Any] = {"tier": tier} | ({"months": 1} if tier != "free" else {})
                async with session.post(f"{url}/admin/accounts", json=body, headers=headers) as r:
                    answer = await r.json()
                    assert r.status == 201, answer
                account = Account(answer["account"]["id"], answer["apiKey"], tier, answer["keyId"])
                rules = limits(len(accounts), tier, duration)
                if rules is not None:
                    account.limited.append(await make_key(session, url, account, rules))
                accounts.append(account)
    rng.shuffle(accounts)
    return accounts


async def settle(dep: Deployment, settings: Settings, timeout: float = 90) -> int:
    """Wait until no reservation is open and every outbox event is synced; the audit's
    unsynced count at the end (0 when settled)."""
    services = open_services(settings)
    plain = aioredis.Redis(port=dep.redis_port)
    deadline = time.monotonic() + timeout
    try:
        while True:
            report = await audit(services)
            open_holds = sum([await plain.zcard(name) for name in keys.all_deadlines()])
            if (not report.unsynced_events and not open_holds) or time.monotonic() > deadline:
                dep.note(f"settled: {open_holds} open holds, {report.unsynced_events} unsynced")
                return int(report.unsynced_events) + int(open_holds)
            await asyncio.sleep(0.5)
    finally:
        await plain.aclose()
        await services.close()


async def judge(dep: Deployment, settings: Settings, load: Load, backend: Backend) -> Verdict:
    services = open_services(settings)
    try:
        report = await audit(services)
    finally:
        await services.close()
    engine = create_engine(normalize_url(dep.direct_url))
    with engine.connect() as connection:
        ledger = [
            dict(row._mapping)
            for row in connection.execute(
                text(
                    "SELECT account_id, kind, plan_delta, bonus_delta, held_plan, held_bonus, "
                    "request_id, reason, tokens, key_id, route, occurred_at "
                    "FROM ledger_entries"
                )
            )
        ]
        balances: dict[str, tuple[int | None, int | None]] = {
            row[0]: (None, int(row[1]))
            for row in connection.execute(
                text("SELECT id, plan_credits + bonus_credits FROM accounts")
            )
        }
    engine.dispose()
    differences = [str(d) for d in report.differences]
    differences += [f"absent in Redis: {a}" for a in report.absent_in_redis]
    if report.unsynced_events:
        differences.append(f"{report.unsynced_events} outbox events never synced")
    keys_made = [key for account in load.accounts for key in account.limited]
    return reconcile(
        load.calls,
        backend.records(),
        ledger,
        load.admin_ops,
        dep.kills,
        differences,
        balances,
        keys_made,
    )


def print_verdict(verdict: Verdict, args: argparse.Namespace, elapsed: float) -> None:
    f = verdict.figures
    rows: list[tuple[str, object]] = [
        ("requests (proxied, every attempt)", f["requests"]),
        ("2xx", f["2xx"]),
        *((f"  {name}", count) for name, count in f["statuses"].items()),
        ("uncertain to the client", f["uncertain"]),
        ("backend: requests / 2xx begun", f"{f['backend requests']} / {f['backend 2xx']}"),
        ("ledger: holds", f["holds"]),
        ("ledger: charges (credits)", f"{f['charges']} ({f['credits charged']})"),
        ("ledger: refunds", f["refunds"]),
        ("ledger: reaped (refunded by the reaper)", f["reaped"]),
        ("ledger: grants / tier changes", f"{f['grants']} / {f['tier changes']}"),
        ("metered: requests / charges", f"{f['metered requests']} / {f['metered charges']}"),
        (
            "metered: tokens reported / paid for",
            f"{f['tokens reported']} / {f['tokens paid']}",
        ),
        (
            "metered: credits held / charged (charges over due: plan reset)",
            f"{f['metered held']} / {f['metered charged']} ({f['capped']})",
        ),
        (
            "limited keys: requests / charged credits",
            f"{f['key requests']} / {f['key credits']}",
        ),
        (
            "limited keys: refusals (401 / 403 / 429 credit / 429 rate)",
            " / ".join(str(f["key refusals"][reason]) for reason in KEY_REFUSALS_SHOWN),
        ),
        ("overspend (credits)", sum(p.credits for p in verdict.overspend)),
        (
            "unaccounted (credits / cases)",
            f"{sum(p.credits for p in verdict.unaccounted)} / {len(verdict.unaccounted)}",
        ),
        ("differences", len(verdict.differences)),
        (
            "latency p50 / p99, all answered",
            f"{f['latency'][0] * 1000:.0f} / {f['latency'][1] * 1000:.0f} ms",
        ),
        (
            "latency p50 / p99, fast JSON",
            f"{f['latency json'][0] * 1000:.0f} / {f['latency json'][1] * 1000:.0f} ms",
        ),
    ]
    print(f"\nproof: seed {args.seed}, load {args.duration:.0f} s, whole run {elapsed:.0f} s")
    width = max(len(name) for name, _ in rows)
    print(f"| {'figure':<{width}} | value |\n| {'-' * width} | ----- |")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    for title, items in (
        ("OVERSPEND", verdict.overspend),
        ("UNACCOUNTED", verdict.unaccounted),
        ("DIFFERENCES", verdict.differences),
    ):
        for item in list(items)[:50]:
            print(f"{title}: {item}")


async def run(args: argparse.Namespace) -> Verdict:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="creditgate-proof-"))
    db_name = f"creditgate_proof_{os.getpid()}"
    pg_host = normalize_url(PG_SERVER)
    forwarder = Forwarder(pg_host.host or "127.0.0.1", pg_host.port or 5432)
    await forwarder.start()
    dep = Deployment(
        workdir,
        free_port(),
        f"postgresql+psycopg://postgres@127.0.0.1:{forwarder.port}/{db_name}",
        str(normalize_url(f"{PG_SERVER}/{db_name}").render_as_string(hide_password=False)),
        forwarder,
    )
    backend = Backend()
    try:
        dep.start_redis()
        await dep.wait_redis()
        create_database(db_name)
        upstream = backend.start()
        redis_url = f"redis://127.0.0.1:{dep.redis_port}/0"
        dep.env = creditgate_env(
            {
                "CREDITGATE_REDIS_URL": redis_url,
                "CREDITGATE_DATABASE_URL": dep.pg_url,
                "CREDITGATE_ADMIN_TOKEN": ADMIN_TOKEN,
                "CREDITGATE_SIGNING_SECRET": SIGNING_SECRET,
                "CREDITGATE_CONFIG": str(write_config(workdir, upstream)),
                "CREDITGATE_UPSTREAM_TIMEOUT": "3",
                "CREDITGATE_RESERVATION_GRACE": "2",
                "CREDITGATE_SYNC_INTERVAL": "0.5",
            }
        )
        migrate = dep.env | {"CREDITGATE_DATABASE_URL": dep.direct_url}
        subprocess.run([*CREDITGATE, "db", "upgrade"], env=migrate, check=True)
        dep.ports = [free_port() for _ in range(3)]
        dep.replicas = [None] * 3
        dep.workers = [None] * 2
        for index in range(3):
            dep.start_replica(index)
        for index in range(2):
            dep.start_worker(index)
        for index in range(3):
            await dep.wait_replica(index)
        urls = [f"http://127.0.0.1:{port}" for port in dep.ports]
        accounts = await open_accounts(dep, urls[0], rng, args.duration)
        dep.note(
            f"deployment up in {workdir}: {len(accounts)} accounts; load for {args.duration:.0f} s"
        )
        load = Load(urls, accounts, ADMIN_TOKEN, rng)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            clients = [asyncio.create_task(load.client(session)) for _ in range(args.clients)]
            operator = asyncio.create_task(load.operator(session, every=1.0))
            load_started = time.monotonic()
            await faults(dep, backend, args.duration)
            await asyncio.sleep(max(0.0, load_started + args.duration - time.monotonic()))
            load.stopping = True
            await asyncio.gather(*clients, operator)
            await asyncio.gather(
                *(load.settle_admin(session, op) for op in load.admin_ops if op.status is None)
            )
        dep.note(f"load stopped: {len(load.calls)} calls")
        await dep.terminate(list(dep.replicas))
        dep.note("replicas stopped (SIGTERM)")
        settings = Settings.load(redis_url=redis_url, database_url=dep.direct_url)
        await settle(dep, settings)
        await dep.terminate(list(dep.workers))
        return await judge(dep, settings, load, backend)
    finally:
        # Each step whatever became of the one before: no process, database or server left.
        await dep.terminate([*dep.replicas, *dep.workers])
        await dep.terminate([dep.redis])
        await forwarder.close()
        with contextlib.suppress(Exception):
            drop_database(db_name)
        with contextlib.suppress(Exception):
            backend.stop()
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--short", action="store_true", help="the CI configuration (45 s)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    args = parser.parse_args()
    if args.short:
        args.duration, args.clients = 45.0, 24
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    started = time.monotonic()
    verdict = asyncio.run(run(args))
    print_verdict(verdict, args, time.monotonic() - started)
    sys.exit(0 if verdict.clean else 1)


if __name__ == "__main__":
    main()
