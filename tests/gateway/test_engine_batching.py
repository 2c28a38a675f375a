"""Automatic pipelining of script calls: the same answers as one by one, fewer round trips,
errors and lost scripts handled per call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.credits.batching import ScriptBatcher
from gateway.credits.engine import CreditEngine
from gateway.errors import StorageUnavailable
from gateway.settings import DEFAULT_TIERS, Tier

TIERS = DEFAULT_TIERS | {"bulk": Tier(credits=100, requests_per_minute=0)}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


class CountingPipelines(ScriptBatcher):
    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__(redis)
        self.pipelines: list[int] = []

    async def _send(self, batch: list) -> None:  # type: ignore[type-arg]
        self.pipelines.append(len(batch))
        await super()._send(batch)


async def test_concurrent_reserves_share_round_trips_and_spend_exactly_the_credits(
    redis: aioredis.Redis,
) -> None:
    engine = CreditEngine(redis, TIERS, batch=True)
    counting = CountingPipelines(redis)
    engine._batcher = counting
    await engine.open("bulk-account", tier="bulk")

    answers = await asyncio.gather(
        *(engine.reserve("bulk-account", f"r{i}", 1) for i in range(300))
    )

    assert sum(a.held for a in answers) == 100
    assert {a.status for a in answers} == {"ok", "insufficient"}
    assert sorted(a.account.credits_remaining for a in answers if a.held) == list(range(100))
    assert len(counting.pipelines) < 300 / 4 and sum(counting.pipelines) == 301
    settled = await asyncio.gather(
        *(engine.settle("bulk-account", f"r{i}", 10) for i in range(300))
    )
    assert sum(s.status == "charged" for s in settled) == 100
    state = await engine.status("bulk-account")
    assert state is not None and (state.credits_remaining, state.total_tokens) == (0, 1000)


async def test_a_script_redis_lost_is_loaded_again(redis: aioredis.Redis) -> None:
    engine = CreditEngine(redis, TIERS, batch=True)
    await engine.open("lost-scripts")
    await redis.script_flush()
    answers = await asyncio.gather(*(engine.reserve("lost-scripts", f"r{i}", 1) for i in range(7)))
    assert [a.status for a in answers].count("ok") == 5


async def test_a_failing_call_fails_alone(redis: aioredis.Redis) -> None:
    engine = CreditEngine(redis, TIERS, batch=True)
    await engine.open("fine")
    await redis.set(keys.account_keys("broken").state, "not a hash")
    fine, broken = await asyncio.gather(
        engine.reserve("fine", "r1", 1),
        engine.reserve("broken", "r1", 1),
        return_exceptions=True,
    )
    assert not isinstance(fine, BaseException) and fine.held
    assert isinstance(broken, StorageUnavailable)


async def test_redis_down_is_storage_unavailable_for_every_call() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    engine = CreditEngine(client, TIERS, batch=True)
    outcomes = await asyncio.gather(
        *(engine.reserve("a", f"r{i}", 1) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, StorageUnavailable) for o in outcomes)
    await client.aclose()


async def test_a_cancelled_caller_does_not_break_the_batch(redis: aioredis.Redis) -> None:
    engine = CreditEngine(redis, TIERS, batch=True)
    await engine.open("bulk-account", tier="bulk")
    doomed = asyncio.ensure_future(engine.reserve("bulk-account", "gone", 1))
    kept = asyncio.ensure_future(engine.reserve("bulk-account", "kept", 1))
    await asyncio.sleep(0)
    doomed.cancel()
    assert (await kept).held
    with pytest.raises(asyncio.CancelledError):
        await doomed
    # The cancelled caller's script ran all the same: its hold is there for the proxy's
    # refund or the reaper, like any call cut off after it reached Redis.
    state = await engine.status("bulk-account")
    assert state is not None and state.credits_remaining == 98
