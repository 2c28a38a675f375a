"""The proxy, admin and sync paths on a Redis Cluster whose first seed node is down.

A 3-master, 3-replica cluster loses the node listed first in ``CREDITGATE_REDIS_URL`` (a
master: its replica takes over). Every process started after that must start all the same,
from the other seeds: two gateway replicas, the sync worker, the CLI. Then an account is made
through the admin API, used through the proxy, granted and revoked with the CLI (the
revocation reaching both replicas within a second), copied to the store, and audited clean.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.books import spare_pg_database
from tests.support.cluster import RedisClusterNodes
from tests.support.deployments import Deployment
from tests.support.gateways import ADMIN_TOKEN, Backends
from tests.support.servers import PG_URL

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def first_seed_down(fresh_cluster: RedisClusterNodes) -> RedisClusterNodes:
    first = fresh_cluster.ports[0]
    fresh_cluster.kill(first)
    fresh_cluster.wait_healthy()
    return fresh_cluster


@pytest.fixture
def deployment(
    first_seed_down: RedisClusterNodes, backends: Backends, tmp_path: Path
) -> Iterator[Deployment]:
    found = Deployment(
        redis_url=first_seed_down.seeds,
        store_url=spare_pg_database(PG_URL, "paths"),
        backends=backends,
        workdir=tmp_path,
        cluster=True,
    )
    try:
        found.start(replicas=2)  # waits until each replica is ready: Redis and store reached
        yield found
    finally:
        found.stop()


def cli_json(deployment: Deployment, *args: str) -> dict[str, object]:
    done = deployment.run("--log-level", "WARNING", *args, "--json")
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout)
    return found


async def test_proxy_admin_sync_and_cli_with_the_first_seed_down(deployment: Deployment) -> None:
    first, second = deployment.urls
    async with httpx.AsyncClient(timeout=10) as http:
        made = await http.post(f"{first}/admin/accounts", headers=ADMIN, json={"tier": "small"})
        assert made.status_code == 201, made.text
        account = made.json()["account"]["id"]
        auth = {"Authorization": f"Bearer {made.json()['apiKey']}"}
        for url in (first, second):
            answer = await http.post(f"{url}/api/projects/json?tokens=500", headers=auth)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-credits-charged"] == "1"
        granted = cli_json(deployment, "accounts", "grant", account, "5", "--reason", "e2e")
        assert granted
        usage = await http.get(f"{second}/api/user/usage", headers=auth)
        assert usage.status_code == 200
        listed = cli_json(deployment, "keys", "list", account)["keys"]
        assert isinstance(listed, list) and len(listed) == 1
        path = f"/admin/accounts/{account}/keys/{listed[0]['id']}"
        revoked = await http.delete(f"{second}{path}", headers=ADMIN)
        assert revoked.status_code == 200, revoked.text
        announced = time.monotonic()
        pending = {first, second}
        while pending and time.monotonic() - announced < 1.0:
            for url in list(pending):
                refused = await http.get(f"{url}/api/user/usage", headers=auth)
                if refused.status_code == 401:
                    pending.discard(url)
            await asyncio.sleep(0.02)
        assert not pending, f"the revoked key still works on {pending}"
    deadline = time.monotonic() + 30
    while (done := deployment.run("audit")).returncode != 0:
        assert time.monotonic() < deadline, done.stdout + done.stderr
        await asyncio.sleep(0.5)
    shown = cli_json(deployment, "accounts", "show", account)
    assert shown["account"]["totalTokensUsed"] == 1000  # type: ignore[index]
    assert "Traceback" not in deployment.logs()
