"""The engine unchanged on a 3-master Redis Cluster: every script's keys share one slot.

The representative scenarios of tests/support/engine_scenarios.py run here as written, on
accounts spread over the cluster's masters.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.credits import keys
from gateway.credits.engine import CreditEngine
from gateway.settings import DEFAULT_TIERS
from tests.support.engine_model import MovableClock
from tests.support.engine_scenarios import SCENARIOS, scenario_library_reloads_when_redis_forgot_it


@pytest.mark.parametrize(
    "scenario",
    [*SCENARIOS, scenario_library_reloads_when_redis_forgot_it],
    ids=lambda f: f.__name__[9:],
)
async def test_scenario_on_cluster(
    scenario: Any, cluster_redis: RedisCluster, clock: MovableClock
) -> None:
    await scenario(CreditEngine(cluster_redis, DEFAULT_TIERS, clock=clock), clock)


async def test_accounts_on_every_master(cluster_redis: RedisCluster, clock: MovableClock) -> None:
    """Buckets land on different masters; each account's calls work wherever its slot is."""
    engine = CreditEngine(cluster_redis, DEFAULT_TIERS, clock=clock)
    accounts = [f"acct-{i}" for i in range(24)]
    nodes = [cluster_redis.get_node_from_key(keys.account_keys(a).state) for a in accounts]
    assert len({node.name for node in nodes if node is not None}) == 3
    for account in accounts:
        await engine.open(account)
        assert (await engine.reserve(account, "r1", 2)).status == "ok"
        assert (await engine.settle(account, "r1", 10)).status == "charged"
        state = await engine.status(account)
        assert state is not None and (state.plan_credits, state.total_tokens) == (3, 10)


async def test_script_calls_are_routed_without_asking_a_node_for_their_keys(
    cluster_redis: RedisCluster, clock: MovableClock
) -> None:
    """redis-py asks a node for the keys of an ``FCALL`` (``COMMAND GETKEYS``), a round trip
    more per call, unless told where they are (``client.cluster_client``)."""

    async def asked() -> int:
        stats = await cluster_redis.info("commandstats", target_nodes=RedisCluster.ALL_NODES)
        return sum(
            int(node_stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
            for node_stats in stats.values()
        )

    engine = CreditEngine(cluster_redis, DEFAULT_TIERS, clock=clock)
    before = await asked()
    for i in range(5):
        await engine.open(f"acct-{i}")
        assert (await engine.reserve(f"acct-{i}", "r1", 1)).status == "ok"
    assert await asked() == before
