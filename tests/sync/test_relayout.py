"""``creditgate relayout``: layout 1's keys moved once, nothing the store lacks lost."""

from __future__ import annotations

from typing import cast

import pytest
import redis.asyncio as aioredis

from gateway.credits import keys
from gateway.credits.engine import CreditEngine
from gateway.credits.outboxes import event_fields
from gateway.settings import DEFAULT_TIERS
from sync.relayout import OutboxNotDrained, RelayoutRedis, relayout

OLD = "cg:1:{b07}:a:acme"


async def layout_1(redis: aioredis.Redis, *, now_ms: int) -> None:
    """What a gateway of layout 1 left: an account, a held and a settled reservation, an
    operation marker, the deadline index."""
    await redis.hset(
        OLD,
        mapping={
            "plan": 3, "bonus": 1, "tier": "free", "sub": 0, "se": 0, "pe": now_ms + 10**9,
            "tt": 4000, "mt": 4000, "v": 7, "rl": 0, "rn": 0, "rr": 0,
        },
    )  # fmt: skip
    await redis.hset(  # its hold is in the ledger already (layout 1's scripts emitted it)
        f"{OLD}:r:held-1",
        mapping={"st": "held", "cost": 1, "pp": 1, "bp": 0, "dl": now_ms + 60_000},
    )
    await redis.zadd("cg:1:{b07}:deadlines", {"acme|held-1": now_ms + 60_000})
    await redis.hset(f"{OLD}:r:done-1", mapping={"st": "charged", "cost": 1, "pp": 1, "bp": 0})
    await redis.pexpire(f"{OLD}:r:done-1", 50_000)
    await redis.set(f"{OLD}:o:grant-1", "1", px=80_000)


def moving(redis: aioredis.Redis) -> RelayoutRedis:
    return cast(RelayoutRedis, redis)


@pytest.fixture(params=["single", "cluster"])
def any_redis(request: pytest.FixtureRequest) -> aioredis.Redis:
    """A single Redis, then the Redis Cluster: the move's keys change slots, so its
    pipelines cross nodes on a cluster."""
    name = "real_redis" if request.param == "single" else "cluster_redis"
    return cast(aioredis.Redis, request.getfixturevalue(name))


async def test_layout_1_moves_and_the_engine_carries_on(any_redis: aioredis.Redis) -> None:
    real_redis = any_redis
    engine = CreditEngine(real_redis, DEFAULT_TIERS)  # type: ignore[arg-type]
    now = await engine.now_ms()
    await layout_1(real_redis, now_ms=now)
    await real_redis.xgroup_create("cg:1:{b07}:outbox", "creditgate-sync", id="0", mkstream=True)

    report = await relayout(moving(real_redis))

    assert (report.moved, report.deadlines, report.kept) == (4, 1, [])
    assert await real_redis.keys("cg:1:*") == []
    new = keys.account_keys("acme")
    assert 0 < await real_redis.pttl(new.reservation("done-1")) <= 50_000
    assert 0 < await real_redis.pttl(new.operation("grant-1")) <= 80_000
    assert await real_redis.pttl(new.reservation("held-1")) == -1
    state = await engine.status("acme")
    assert state is not None and (state.plan_credits, state.bonus_credits) == (3, 1)
    assert state.total_tokens == 4000
    assert (await engine.reserve("acme", "done-1", 1)).status == "duplicate"
    assert (await engine.settle("acme", "held-1", 10)).status == "charged"
    (_, last), *_ = await real_redis.xrevrange(keys.account_keys("acme").outbox, count=1)
    charge = event_fields(last)
    # layout 1 emitted the hold already: its charge moves no credits, as it did then
    assert (charge["kind"], charge["dp"], charge["rp"], charge["plan"]) == ("charge", "0", "0", "3")
    bucket = keys.bucket_of("acme")
    assert await real_redis.zcard(keys.deadlines(bucket)) == 0  # the settle found its entry

    assert await relayout(moving(real_redis)) == type(report)()  # a second run: nothing


async def test_a_key_the_new_layout_has_wins(real_redis: aioredis.Redis) -> None:
    engine = CreditEngine(real_redis, DEFAULT_TIERS)  # type: ignore[arg-type]
    await layout_1(real_redis, now_ms=await engine.now_ms())
    await engine.open("acme", tier="pro")  # restored from the store meanwhile, say

    report = await relayout(moving(real_redis))

    assert report.kept == [OLD]
    state = await engine.status("acme")
    assert state is not None and state.plan_credits == 100
    assert await real_redis.exists(OLD) == 0


async def test_it_refuses_while_layout_1_outboxes_hold_events(
    real_redis: aioredis.Redis,
) -> None:
    await layout_1(real_redis, now_ms=0)
    await real_redis.xadd("cg:1:{b07}:outbox", {"acct": "acme", "kind": "charge"})

    with pytest.raises(OutboxNotDrained, match="1 event"):
        await relayout(moving(real_redis))
    assert await real_redis.exists(OLD) == 1
