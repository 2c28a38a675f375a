"""OS processes the tests start: ``creditgate`` commands, and traffic through the engine
(tests/support/traffic.py)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from gateway.credits import keys
from gateway.services import Services

TRAFFIC = Path(__file__).with_name("traffic.py")
CREDITGATE = [sys.executable, "-m", "gateway.cli"]
"""The ``creditgate`` command, run by this interpreter."""


def creditgate_env(values: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any CREDITGATE_ variable, plus ``values``: a child
    ``creditgate`` sees the test's settings and none of the developer's own."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CREDITGATE_")}
    return env | dict(values)


class Traffic:
    """Traffic processes (tests/support/traffic.py), killed at teardown if still running."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, seed: int, ops: int, accounts: list[str], *extra: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(TRAFFIC),
            self.redis_url,
            str(seed),
            str(ops),
            *accounts,
            *extra,
            stdout=asyncio.subprocess.PIPE,
        )
        self.procs.append(proc)

    async def wait(self) -> list[dict[str, int]]:
        """Wait for every process; their counts. Fails if any process failed."""
        results = []
        for proc in self.procs:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
            assert proc.returncode == 0
            results.append(json.loads(out))
        self.procs.clear()
        return results

    def kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()

    async def stop(self) -> None:
        """Kill what still runs and reap every process (a fixture's teardown)."""
        self.kill()
        for proc in self.procs:
            await proc.wait()


ACCOUNTS = [f"acct-{i}" for i in range(12)]


async def open_accounts(services: Services, accounts: list[str]) -> None:
    for i, account in enumerate(accounts):
        await services.credits.open(account, tier=("free", "pro")[i % 2], months=1)


async def burst(services: Services, traffic: Traffic, *, processes: int = 4, ops: int = 120) -> int:
    """Open the accounts and run traffic from several processes; the events in the outbox."""
    await open_accounts(services, ACCOUNTS)
    for seed in range(processes):
        await traffic.start(seed, ops, ACCOUNTS)
    results = await traffic.wait()
    assert sum(r.get("charge", 0) for r in results) > 0
    assert sum(r.get("grant", 0) for r in results) > 0
    return sum([await services.redis.xlen(keys.outbox(b)) for b in range(keys.BUCKETS)])
