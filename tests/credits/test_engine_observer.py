"""The engine's script observer: every call that ended is reported with its script, its time
and whether it answered, batched or not; a failed call as a failure; a cancelled one not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from gateway.credits.engine import CreditEngine
from gateway.errors import Unavailable
from gateway.settings import DEFAULT_TIERS
from tests.support.gateways import free_port

Heard = list[tuple[str, float, bool]]


def listen(engine: CreditEngine) -> Heard:
    heard: Heard = []
    engine.observer = lambda script, seconds, answered: heard.append((script, seconds, answered))
    return heard


async def test_each_call_is_reported_once_with_its_script(
    make_engine: Callable[..., CreditEngine],
) -> None:
    engine = make_engine()  # on fakeredis, Redis, and Redis through a Wire (batched)
    heard = listen(engine)
    await engine.open("acct-o", tier="free")
    await engine.reserve("acct-o", "r1", 1)
    await engine.settle_soon("acct-o", "r1", 10)
    await engine.reserve("acct-o", "r2", 1)
    await engine.refund("acct-o", "r2", reason="upstream 500")
    assert [(script, answered) for script, _, answered in heard] == [
        ("open", True),
        ("reserve", True),
        ("settle", True),
        ("reserve", True),
        ("refund", True),
    ]
    assert all(0 <= seconds < 5 for _, seconds, _ in heard)


@pytest.mark.parametrize("batch", [False, True])
async def test_a_failed_call_is_reported_as_such(batch: bool) -> None:
    nobody = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}")  # a closed port
    engine = CreditEngine(nobody, DEFAULT_TIERS, batch=batch)
    heard = listen(engine)
    try:
        with pytest.raises(Unavailable):
            await engine.reserve("acct-o", "r1", 1)
        with pytest.raises(Unavailable):
            await engine.settle_soon("acct-o", "r1", 10)
    finally:
        await nobody.aclose()
    assert [(script, answered) for script, _, answered in heard] == [
        ("reserve", False),
        ("settle", False),
    ]


async def test_a_cancelled_call_is_not_reported() -> None:
    class Hanging:
        async def fcall(self, *args: object) -> None:
            await asyncio.Event().wait()

    engine = CreditEngine(Hanging(), DEFAULT_TIERS)  # type: ignore[arg-type]
    heard = listen(engine)
    call = asyncio.ensure_future(engine.reserve("acct-o", "r1", 1))
    await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert heard == []
