"""Sync benchmark: outbox events applied to PostgreSQL per second, and the lag under load.

1. drain: ``--events`` outbox events are generated with the credit engine (reserve + settle
   pairs and grants over ``--accounts`` accounts) into a bench Redis (db 14, or
   ``CREDITGATE_BENCH_REDIS_URL``), then one ``SyncWorker`` drains them into a bench
   PostgreSQL database (``cg_bench``, or ``CREDITGATE_BENCH_PG_URL``; created if missing,
   emptied and migrated each run). Printed: events/s applied. Goal: >= 5,000.
2. lag: a load process charges through the engine for ``--seconds`` while the worker runs
   its loop every ``--interval`` seconds; the lag (age of the oldest unsynced event) is
   sampled after every pass. Printed: load events/s, lag p50 / max. Goal: max under two
   intervals.

Nothing asserts a time: the figures are for people. The machine's load is printed with them.
Run: ``python bench/sync.py [--events 30000] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, this folder leads sys.path and this file would shadow the `sync` package:
# the repository root takes its place (bench/proxy.py puts it first too), which also makes the
# tests' own store helpers importable.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import redis.asyncio as aioredis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gateway.credits import keys
from gateway.credits.engine import CreditEngine
from gateway.services import Services, open_services
from gateway.settings import DEFAULT_TIERS, Settings, Tier
from store.database import normalize_url, upgrade
from sync.worker import SyncWorker
from tests.support.stores import reset_pg_schema

REDIS_URL = os.environ.get("CREDITGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PG_URL = os.environ.get(
    "CREDITGATE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/cg_bench"
)
TIERS = DEFAULT_TIERS | {"enterprise": Tier(credits=1_000_000_000, requests_per_minute=0)}
IN_FLIGHT = 64


def fresh_database(url: str) -> None:
    """Create the bench database if missing, empty it and migrate it."""
    parsed = normalize_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": parsed.database},
            ).first()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    finally:
        admin.dispose()
    reset_pg_schema(url)
    upgrade(url)


def account_ids(n: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(n)]


async def charge(engine: CreditEngine, account: str, request_id: str) -> int:
    """One proxied request as the gateway makes it: two outbox events."""
    held = await engine.reserve(account, request_id, 1)
    if not held.held:
        return 0
    await engine.settle(account, request_id, 2000)
    return 2


async def generate(engine: CreditEngine, accounts: list[str], events: int) -> int:
    """At least ``events`` outbox events, ``IN_FLIGHT`` requests at a time."""
    made = 0
    n = 0
    while made < events:
        batch = []
        for _ in range(IN_FLIGHT):
            account = accounts[n % len(accounts)]
            if n % 10 == 0:
                batch.append(_grant(engine, account))
            else:
                batch.append(charge(engine, account, f"g{n}"))
            n += 1
        made += sum(await asyncio.gather(*batch))
    return made


async def _grant(engine: CreditEngine, account: str) -> int:
    await engine.grant(account, 1, reason="bench")
    return 1


async def outbox_length(redis: Any) -> int:
    pipe = redis.pipeline(transaction=False)
    for bucket in range(keys.BUCKETS):
        pipe.xlen(keys.outbox(bucket))
    return sum(await pipe.execute())


async def drain(services: Services, accounts: list[str], events: int, batch_size: int) -> None:
    for account in accounts:
        await services.credits.open(account, tier="enterprise")
    started = time.perf_counter()
    made = await generate(services.credits, accounts, events) + len(accounts)
    generated_s = time.perf_counter() - started
    print(f"generated {made} events in {generated_s:.1f} s ({made / generated_s:,.0f}/s)")

    worker = SyncWorker(services, batch_size=batch_size, max_batches=1_000_000)
    started = time.perf_counter()
    applied = await worker.sync()
    elapsed = time.perf_counter() - started
    left = await outbox_length(services.redis)
    print(
        f"drain: {applied} events applied to PostgreSQL in {elapsed:.2f} s: "
        f"{applied / elapsed:,.0f} events/s ({worker.stats.batches} batches of up to "
        f"{batch_size}/bucket; {left} left)"
    )


async def lag(services: Services, accounts: list[str], seconds: float, interval: float) -> None:
    load = subprocess.Popen(
        [sys.executable, __file__, "load", "--seconds", str(seconds), *accounts[:50]],
        stdout=subprocess.PIPE,
    )
    worker = SyncWorker(services)
    samples: list[int] = []
    applied = 0
    try:
        assert load.stdout is not None
        await asyncio.to_thread(load.stdout.readline)  # started: its imports are slow
        while load.poll() is None:
            # Sampled right before a pass: the oldest event has waited longest then.
            samples.append(await worker.reader.lag_ms())
            applied += await worker.run_once()
            await asyncio.sleep(interval)
        applied += await worker.run_once()
    finally:
        if load.poll() is None:
            load.kill()
        out, _ = load.communicate()
    made = int(out.decode().split()[-1])
    print(
        f"lag under load: {made / seconds:,.0f} events/s of load for {seconds:g} s, "
        f"pass every {interval:g} s: lag before a pass "
        f"p50 {statistics.median(samples or [0]):,.0f} ms, "
        f"max {max(samples or [0]):,} ms over {len(samples)} passes "
        f"(goal: under {2 * interval * 1000:,.0f} ms); {applied} applied"
    )


async def load_main(seconds: float, accounts: list[str]) -> None:
    """The load process: charges for ``seconds`` seconds; prints the events it made."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    engine = CreditEngine(client, TIERS)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    made = 0
    n = 0
    try:
        while time.monotonic() < deadline:
            batch = [
                charge(engine, accounts[(n + i) % len(accounts)], f"l{n + i}") for i in range(8)
            ]
            n += len(batch)
            made += sum(await asyncio.gather(*batch))
    finally:
        await client.aclose()
    print(made)


async def main(args: argparse.Namespace) -> None:
    fresh_database(PG_URL)
    settings = Settings.load(
        redis_url=REDIS_URL, database_url=PG_URL, sync_interval=args.interval, tiers=TIERS
    )
    services = open_services(settings)
    try:
        await services.redis.flushdb()
        where = make_url(PG_URL).render_as_string(hide_password=True)
        print(f"redis {REDIS_URL}, store {where}, load average {os.getloadavg()[0]:.2f}")
        accounts = account_ids(args.accounts)
        await drain(services, accounts, args.events, args.batch_size)
        await lag(services, accounts, args.seconds, args.interval)
        print(f"load average {os.getloadavg()[0]:.2f}")
    finally:
        await services.close()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    load = sub.add_parser("load", help="(internal) the load process of the lag run")
    load.add_argument("--seconds", type=float, required=True)
    load.add_argument("accounts", nargs="+")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=200, help="events per bucket per batch")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the lag run")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between passes")
    args = parser.parse_args()
    if args.mode == "load":
        asyncio.run(load_main(args.seconds, args.accounts))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
