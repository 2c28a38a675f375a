"""Micro-benchmark of the credit engine: reserve+settle pairs per second next to bare INCRs.

Both are measured in the same run, on the same client, sequentially and with concurrent
tasks, each for a bounded time, so the ratio says what the Lua scripts cost over a plain
round trip on this machine. The pairs are measured three ways: through redis-py one call a
round trip, pipelined per loop turn through redis-py, and pipelined on the engine's own
connection (``Wire``), which is how the gateway runs on a plain Redis. Uses db 15 of the
local Redis (or CREDITGATE_BENCH_REDIS_URL) and flushes only that database.

    python bench/engine.py [--seconds 2] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from gateway.credits.engine import CreditEngine
from gateway.credits.wire import Wire
from gateway.settings import Tier

DEFAULT_URL = "redis://127.0.0.1:6379/15"
TIERS = {"free": Tier(credits=1_000_000_000, requests_per_minute=0)}

Op = Callable[[int], Awaitable[object]]


async def rate(op: Op, seconds: float, concurrency: int) -> float:
    """Operations per second of ``op`` run by ``concurrency`` tasks for about ``seconds``."""
    counter = itertools.count()
    done = 0
    stop = time.perf_counter() + seconds

    async def task() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await op(next(counter))
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def run(url: str, seconds: float, concurrency: int) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True, max_connections=concurrency + 4)
    try:
        await client.flushdb()
        engines = {
            "pairs/s, one by one": CreditEngine(client, TIERS, retain_ms=5_000),
            "pairs/s, pipelined": CreditEngine(client, TIERS, retain_ms=5_000, batch=True),
            "pairs/s, on a Wire": CreditEngine(
                client, TIERS, retain_ms=5_000, wire=Wire.for_url(url)
            ),
        }
        await engines["pairs/s, one by one"].open("bench")

        def pairs_on(engine: CreditEngine) -> Op:
            async def pair(i: int) -> None:
                rid = f"b{i}"
                await engine.reserve("bench", rid, 1)
                await engine.settle("bench", rid, 2000)

            return pair

        async def incr(i: int) -> None:
            await client.incr("bench:counter")

        ops: dict[str, Op] = {"INCR /s": incr}
        for name, engine in engines.items():
            ops[name] = pairs_on(engine)
            await rate(ops[name], 0.2, 1)  # load the scripts and warm the connections
        print(f"redis: {url}  {seconds:.1f}s per figure")
        print(f"{'':24}{'sequential':>14}{f'{concurrency} tasks':>14}")
        figures: dict[str, list[float]] = {}
        for name, op in ops.items():
            figures[name] = [await rate(op, seconds, 1), await rate(op, seconds, concurrency)]
            print(f"{name:24}{figures[name][0]:14,.0f}{figures[name][1]:14,.0f}")
        incrs = figures["INCR /s"]
        for name in engines:
            ratios = [p / i for p, i in zip(figures[name], incrs, strict=True)]
            print(f"{name.replace('pairs/s', 'pairs / INCR'):24}{ratios[0]:14.3f}{ratios[1]:14.3f}")
        print("(a pair is two script calls: 1.0 would be as fast as a bare INCR round trip)")
        await client.flushdb()
    finally:
        for engine in engines.values():
            await engine.aclose()
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure (default 2)")
    parser.add_argument("--concurrency", type=int, default=50, help="tasks (default 50)")
    parser.add_argument("--url", default=os.environ.get("CREDITGATE_BENCH_REDIS_URL", DEFAULT_URL))
    args = parser.parse_args()
    asyncio.run(run(args.url, args.seconds, args.concurrency))


if __name__ == "__main__":
    main()
