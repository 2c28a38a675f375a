"""Credit traffic from a separate OS process, straight through the engine (a stand-in gateway).

Run as ``python traffic.py REDIS_URL SEED OPS ACCOUNT...``: ``OPS`` random operations on the
accounts (charges, refunds, grants, upgrades, renewals, downgrades). With ``--pause-file F``
it keeps going until the file disappears (steady load). Prints one JSON line of counts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
from collections import Counter

import redis.asyncio as aioredis

from gateway.credits.engine import CreditEngine
from gateway.settings import DEFAULT_TIERS


async def one(engine: CreditEngine, rng: random.Random, account: str, tag: str) -> str:
    roll = rng.random()
    if roll < 0.55:
        held = await engine.reserve(account, tag, rng.choice((1, 1, 2)))
        if not held.held:
            return held.status
        await engine.settle(account, tag, rng.randrange(0, 5000))
        return "charge"
    if roll < 0.75:
        held = await engine.reserve(account, tag, 1)
        if not held.held:
            return held.status
        await engine.refund(account, tag, reason="upstream failed")
        return "refund"
    if roll < 0.87:
        await engine.grant(account, rng.randrange(1, 20), reason="traffic")
        return "grant"
    if roll < 0.93:
        await engine.set_tier(account, "upgrade", tier=rng.choice(("pro", "enterprise")), months=1)
        return "upgrade"
    if roll < 0.97:
        result = await engine.set_tier(account, "renew", months=1)
        return "renew" if result.status == "renewed" else result.status
    await engine.set_tier(account, "downgrade")
    return "downgrade"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url")
    parser.add_argument("seed", type=int)
    parser.add_argument("ops", type=int)
    parser.add_argument("accounts", nargs="+")
    parser.add_argument("--until-gone", help="keep going while this file exists")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    client = aioredis.Redis.from_url(args.redis_url, decode_responses=True)
    # No rate limit: the burst is about credits and events, not pacing.
    tiers = {n: dataclasses.replace(t, requests_per_minute=0) for n, t in DEFAULT_TIERS.items()}
    engine = CreditEngine(client, tiers)
    counts: Counter[str] = Counter()
    i = 0
    try:
        while i < args.ops or (args.until_gone and os.path.exists(args.until_gone)):
            account = rng.choice(args.accounts)
            counts[await one(engine, rng, account, f"p{args.seed}-{i}")] += 1
            i += 1
    finally:
        await client.aclose()
    print(json.dumps(counts))


if __name__ == "__main__":
    asyncio.run(main())
