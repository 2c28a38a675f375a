"""The cluster client ``connect`` makes: a burst of calls to one node is served, not refused.

redis-py's cluster client caps each node's connections at 100 by default and raises
``MaxConnectionsError`` past it (no waiting): under 50 client connections the bench saw 91
such 503s in 4,400 requests. ``connect`` gives it the single Redis's cap instead.
"""

from __future__ import annotations

import asyncio

from gateway.credits.client import connect
from gateway.settings import Settings

CALLS = 300
"""Calls in flight at once, all on one slot: three times redis-py's default cap of a node."""


async def test_a_burst_on_one_node_is_served(cluster_ports: list[int]) -> None:
    urls = ",".join(f"redis://127.0.0.1:{port}" for port in cluster_ports)
    client = connect(Settings.load(redis_url=urls, redis_cluster=True))
    try:
        await client.set("{burst}:k", "v", px=60_000)
        replies = await asyncio.gather(*(client.get("{burst}:k") for _ in range(CALLS)))
        assert replies == ["v"] * CALLS
    finally:
        await client.delete("{burst}:k")
        await client.aclose()
