"""A single Redis down for 5 s under load: every answered 2xx charged, every failure refunded.

The deployment's own ``redis-server`` (append-only file, so a restart loses nothing) is shut
down while clients send requests through two gateway replicas, and started again 5 s later.
No sync worker runs, so no reaper: whatever is charged or given back afterwards is the
gateways' own retries. The seconds the books took to balance once Redis answered again are
printed (``-s``), as are the 503s.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.books import REFUSED, SERVED, Load, balanced, spare_pg_database
from tests.support.cluster import cli, wait_until
from tests.support.deployments import TIERS, Deployment, open_accounts
from tests.support.gateways import Backends, free_port
from tests.support.servers import PG_URL

DOWN_S = 5.0
TIER_MIX = ["bulk"] * 6 + ["small"] * 2


class OwnRedis:
    """A redis-server of the test's own on a free port; ``stop`` shuts it down cleanly (the
    append-only file is written), ``start`` brings it back with its data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
                + ["--dir", str(self.folder), "--save", "", "--appendonly", "yes"]
                + ["--appendfsync", "always"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until("redis answering", lambda: "PONG" in cli(self.port, "PING"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            cli(self.port, "SHUTDOWN")
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not on PATH")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = OwnRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_redis_down_for_5_seconds_under_load(
    own_redis: OwnRedis, backends: Backends, tmp_path: Path
) -> None:
    deployment = Deployment(
        redis_url=own_redis.url,
        store_url=spare_pg_database(PG_URL, "outage"),
        backends=backends,
        workdir=tmp_path,
    )
    deployment.start(replicas=2, sync=False)
    services = deployment.services()
    try:
        accounts = await open_accounts(services, TIER_MIX)
        credits = {a.account_id: TIERS[t] for a, t in zip(accounts, TIER_MIX, strict=True)}
        load = Load(deployment.urls, accounts, clients=30)
        load.start()
        await load.warm()
        down = time.monotonic()
        await asyncio.to_thread(own_redis.stop)
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(own_redis.start)
        back = time.monotonic()
        await load.stop()  # the requests in flight finish on the Redis that is back
        statuses = load.statuses()
        assert set(statuses) <= SERVED | REFUSED, (statuses, deployment.logs())
        assert statuses[503] > 0 and statuses[200] > 0, (statuses, deployment.logs())
        await balanced(services, load, credits)
        settled_in = time.monotonic() - back
        errors503, window = load.outage(down)
        print(
            f"\nsingle Redis down {back - down:.1f} s: {dict(statuses)}; {errors503} x 503 "
            f"over {window:.1f} s; every hold settled or refunded within "
            f"{settled_in:.1f} s of Redis returning"
        )
        assert "Traceback" not in deployment.logs()
    finally:
        await services.close()
        deployment.stop()
