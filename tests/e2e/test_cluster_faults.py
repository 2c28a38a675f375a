"""The promise on a Redis Cluster of 3 masters and 3 replicas, through an operator's faults.

Three gateway replicas and a sync worker run on the cluster (every node a seed), many clients
send cost-1 requests. A master is SIGKILLed (its replica takes over), or slots holding live
accounts are moved with ``redis-cli --cluster reshard``, under that load. Afterwards: no 500
(only 200, 429 for an account out of credits, 503 while a slot had no master), every 2xx
charged once, every other answer refunded, no account past its credits, no hold left open,
``creditgate audit`` clean. The 503s and the seconds they spanned are printed (``-s``): the
figures README quotes.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.credits import keys
from tests.support.books import REFUSED, SERVED, Load, balanced, spare_pg_database
from tests.support.cluster import Node, RedisClusterNodes, cluster_slot_of
from tests.support.deployments import TIERS, Deployment, open_accounts
from tests.support.gateways import Backends, NewAccount
from tests.support.servers import PG_URL

TIER_MIX = ["bulk"] * 8 + ["small"] * 4
WARM_S = 2.0
"""Load kept up after the cluster is healthy again."""


@pytest.fixture
def deployment(
    fresh_cluster: RedisClusterNodes, backends: Backends, tmp_path: Path
) -> Iterator[Deployment]:
    found = Deployment(
        redis_url=fresh_cluster.seeds,
        store_url=spare_pg_database(PG_URL, "cluster"),
        backends=backends,
        workdir=tmp_path,
        cluster=True,
    )
    try:
        found.start(replicas=3)
        yield found
    finally:
        found.stop()


async def audit_clean(deployment: Deployment) -> None:
    """``creditgate audit`` exits 0 once the sync worker has copied every event."""
    deadline = time.monotonic() + 30
    while True:
        done = deployment.run("audit")
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"audit not clean:\n{done.stdout}{done.stderr}")
        await asyncio.sleep(0.5)


async def run_fault(deployment: Deployment, cluster: RedisClusterNodes, fault: str) -> None:
    services = deployment.services()
    try:
        accounts = await open_accounts(services, TIER_MIX)
        credits = {a.account_id: TIERS[t] for a, t in zip(accounts, TIER_MIX, strict=True)}
        load = Load(deployment.urls, accounts, clients=30)
        load.start()
        await load.warm()
        faulted = time.monotonic()
        if fault == "failover":
            slot = cluster_slot_of(keys.account_keys(accounts[0].account_id).state)
            victim = cluster.master_of(slot)
            cluster.kill(victim.port)
            await asyncio.to_thread(cluster.wait_healthy, within=60)
            what = f"SIGKILL of master :{victim.port}"
        else:
            moved, done = await asyncio.to_thread(reshard_live_slots, cluster, accounts)
            assert done.returncode == 0, done.stdout[-2000:]
            what = f"reshard of {moved} slots holding live accounts"
        healthy = time.monotonic()
        await asyncio.sleep(WARM_S)
        await load.stop()
        statuses = load.statuses()
        assert set(statuses) <= SERVED | REFUSED, (statuses, deployment.logs())
        assert statuses[200] > 0
        settled_in = await balanced(services, load, credits)
        errors503, window = load.outage(faulted)
        print(
            f"\n{fault}: {what}; {sum(statuses.values())} answers {dict(statuses)}; "
            f"{errors503} x 503 over {window:.1f} s; cluster healthy {healthy - faulted:.1f} s "
            f"after the fault; books balanced {settled_in:.1f} s after the load stopped"
        )
        await audit_clean(deployment)
        assert "Traceback" not in deployment.logs()
    finally:
        await services.close()


def reshard_live_slots(
    cluster: RedisClusterNodes, accounts: list[NewAccount]
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Move the fewest slots that carry a live account: ``redis-cli --cluster reshard`` takes
    the lowest slots of its source, so as many as it takes to reach that account's."""
    masters = cluster.masters()
    fewest: tuple[int, Node] | None = None
    for account in accounts:
        slot = cluster_slot_of(keys.account_keys(account.account_id).state)
        source = next(m for m in masters if m.holds(slot))
        rank = sum(min(high, slot) - low + 1 for low, high in source.slots if low <= slot)
        if fewest is None or rank < fewest[0]:
            fewest = (rank, source)
    assert fewest is not None
    rank, source = fewest
    target = next(m for m in masters if m.node_id != source.node_id)
    return rank, cluster.reshard(source, target, rank)


async def test_a_master_sigkilled_under_load(
    deployment: Deployment, fresh_cluster: RedisClusterNodes
) -> None:
    await run_fault(deployment, fresh_cluster, "failover")


async def test_slots_of_live_accounts_resharded_under_load(
    deployment: Deployment, fresh_cluster: RedisClusterNodes
) -> None:
    await run_fault(deployment, fresh_cluster, "reshard")
