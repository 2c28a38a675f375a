"""The ``creditgate sync`` and ``creditgate audit`` processes: a worker SIGKILLed mid-batch and
restarted duplicates and loses nothing; a worker serves its own metrics; audit exits 0 when
clean, 1 on a seeded difference."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.credits import keys
from gateway.services import Services
from sync.worker import SyncWorker
from tests.support.gateways import free_port, wait_for
from tests.support.processes import ACCOUNTS, CREDITGATE, Traffic, burst, creditgate_env
from tests.support.redisstate import change_state, state_of
from tests.support.scrapes import total
from tests.support.storeview import StoreView, assert_in_sync, ledger_size, store_services


@pytest.fixture
async def services(
    real_redis: aioredis.Redis, redis_url: str, store_url: str
) -> AsyncIterator[Services]:
    """Services on the real Redis and the fresh store, as in tests/sync (in place of the
    replicas' of e2e/conftest.py)."""
    async with store_services(redis_url, store_url) as built:
        yield built


class Commands:
    """``creditgate`` processes on the test Redis and store, killed at teardown."""

    def __init__(self, redis_url: str, store_url: str, workdir: Path) -> None:
        self.workdir = workdir
        self.env = creditgate_env(
            {
                "CREDITGATE_REDIS_URL": redis_url,
                "CREDITGATE_DATABASE_URL": store_url,
                "CREDITGATE_SYNC_INTERVAL": "0.05",
            }
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """A long-running command; its output goes to a log file in the work directory."""
        with open(self.workdir / f"{args[0]}-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [*CREDITGATE, *args], env=self.env, cwd=self.workdir, stdout=log, stderr=log
            )
        self.procs.append(proc)
        return proc

    def run(self, *args: str) -> tuple[int, str]:
        """A command to completion: its exit code and output."""
        done = subprocess.run(
            [*CREDITGATE, *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return done.returncode, done.stdout.decode() + done.stderr.decode()

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def commands(redis_url: str, store_url: str, tmp_path: Path) -> Iterator[Commands]:
    running = Commands(redis_url, store_url, tmp_path)
    yield running
    running.kill_all()


async def outbox_length(redis: aioredis.Redis) -> int:
    return sum([await redis.xlen(keys.outbox(b)) for b in range(keys.BUCKETS)])


async def until_fewer(redis: aioredis.Redis, below: int, *, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while await outbox_length(redis) >= below:
        assert time.monotonic() < deadline, f"outbox did not drop below {below} in time"
        await asyncio.sleep(0.01)


async def test_sigkilled_worker_restarts_without_duplicates_or_gaps(
    services: Services, traffic: Traffic, commands: Commands
) -> None:
    events = await burst(services, traffic, processes=3, ops=400)
    redis = services.redis

    worker = commands.start("sync", "--consumer", "worker-1", "--batch-size", "2")
    await until_fewer(redis, events * 3 // 4)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    left = await outbox_length(redis)
    assert 0 < left < events  # killed mid-way through the backlog

    restarted = commands.start("sync", "--consumer", "worker-1", "--batch-size", "2")
    await until_fewer(redis, 1)
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(timeout=30) == 0

    view = StoreView(services)
    accounts = await assert_in_sync(services, view)
    assert await ledger_size(view, accounts) == events


@pytest.mark.parametrize("store_kind", ["sqlite"])  # the command, not the store
async def test_a_worker_serves_its_own_metrics_on_the_port_it_is_given(
    services: Services, traffic: Traffic, commands: Commands
) -> None:
    events = await burst(services, traffic, processes=2, ops=60)
    port = free_port()
    worker = commands.start("sync", "--metrics-port", str(port))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

        async def applied_all() -> bool:
            try:
                text = (await http.get("/metrics")).text
            except httpx.HTTPError:  # not serving yet
                return False
            return total(text, "creditgate_sync_events_applied_total") == events

        await wait_for(applied_all, timeout=30)
        text = (await http.get("/metrics")).text
    assert total(text, "creditgate_sync_lag_seconds") == 0
    assert total(text, "creditgate_sync_errors_total") == 0
    assert total(text, "process_cpu_seconds_total") > 0

    code, out = commands.run("sync", "--metrics-port", str(port))  # the port is taken
    assert code == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in out
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


@pytest.mark.parametrize("store_kind", ["sqlite"])  # the command, not the store
async def test_audit_command_clean_then_non_zero_on_a_seeded_difference(
    services: Services, traffic: Traffic, commands: Commands
) -> None:
    await burst(services, traffic, processes=2, ops=60)
    assert await SyncWorker(services).run_once() > 0

    code, out = commands.run("audit")
    assert code == 0, out
    assert f"audited {len(ACCOUNTS)} account(s): clean" in out

    bonus = (await state_of(services.redis, ACCOUNTS[3]))["bonus"]
    await change_state(services.redis, ACCOUNTS[3], bonus=int(bonus) + 1)  # bypassing the outbox
    code, out = commands.run("audit")
    assert code == 1, out
    assert f"{ACCOUNTS[3]}: bonus_credits: redis=" in out
    assert "1 difference(s)" in out
