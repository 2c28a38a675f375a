"""No double spend across OS processes: hundreds of concurrent calls on one account, real Redis.

Each worker is a spawned process with its own Redis client and event loop; a barrier lets
them start together. The engine has no clock here: the scripts read Redis TIME.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections import Counter
from multiprocessing.synchronize import Barrier
from typing import Any

import redis.asyncio as aioredis

from gateway.credits import keys
from gateway.credits.engine import CreditEngine
from gateway.settings import Tier
from tests.support.engine_model import Event, outbox_events
from tests.support.redisstate import state_of

PROCESSES = 4
CALLS = 75
CREDITS = 100
TIERS = {"free": Tier(credits=CREDITS, requests_per_minute=0)}
JOIN_S = 120

Outcome = list[tuple[str, str, int]]
"""(what, request id, number): the calls one worker made and what they answered."""


async def _reserves(engine: CreditEngine, account: str, worker: int) -> Outcome:
    rids = [f"w{worker}-r{i}" for i in range(CALLS)]
    answers = await asyncio.gather(*(engine.reserve(account, rid, 1) for rid in rids))
    return [(a.status, rid, 0) for rid, a in zip(rids, answers, strict=True)]


async def _mixed_call(engine: CreditEngine, account: str, rid: str, rng: random.Random) -> Outcome:
    """A reserve, then a charge or a refund (sometimes repeated), or now and then a grant."""
    if rng.random() < 0.1:
        await engine.grant(account, 2, reason="concurrent", request_id=rid)
        return [("granted", rid, 2)]
    r = await engine.reserve(account, rid, rng.choice([1, 1, 2]))
    done: Outcome = [(r.status, rid, 0)]
    if not r.held:
        return done
    for _ in range(rng.choice([1, 1, 2])):
        if rng.random() < 0.6:
            tokens = rng.randrange(5000)
            s = await engine.settle(account, rid, tokens)
            done.append((s.status, rid, tokens))
        else:
            s = await engine.refund(account, rid, reason="failed")
            done.append((s.status, rid, s.credits))
    return done


async def _mixed(engine: CreditEngine, account: str, worker: int) -> Outcome:
    rng = random.Random(worker)
    calls = [_mixed_call(engine, account, f"w{worker}-m{i}", rng) for i in range(CALLS)]
    return [step for steps in await asyncio.gather(*calls) for step in steps]


def worker_main(
    url: str, account: str, worker: int, mode: str, barrier: Barrier, results: Any
) -> None:
    async def run() -> Outcome:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            engine = CreditEngine(client, TIERS)
            await client.ping()
            barrier.wait(timeout=JOIN_S)
            body = _reserves if mode == "reserve" else _mixed
            return await body(engine, account, worker)
        finally:
            await client.aclose()

    results.put((worker, asyncio.run(run())))


def run_workers(url: str, account: str, mode: str) -> Outcome:
    """Start PROCESSES spawned workers together; their outcomes, in any order."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=worker_main, args=(url, account, w, mode, barrier, results))
        for w in range(PROCESSES)
    ]
    try:
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=JOIN_S) for _ in procs]
        for p in procs:
            p.join(timeout=JOIN_S)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
        results.join_thread()
    assert sorted(w for w, _ in outcomes) == list(range(PROCESSES))
    return [step for _, steps in outcomes for step in steps]


def assert_never_negative_and_whole(events: list[Event]) -> None:
    assert [e.v for e in events] == sorted({e.v for e in events})  # strictly increasing
    assert all(e.plan >= 0 and e.bonus >= 0 for e in events)
    last = events[-1]
    assert sum(e.dp for e in events) == last.plan
    assert sum(e.db for e in events) == last.bonus


async def test_exactly_n_of_many_concurrent_reserves_pass(real_redis: Any, redis_url: str) -> None:
    engine = CreditEngine(real_redis, TIERS)
    await engine.open("shared")
    outcome = await asyncio.to_thread(run_workers, redis_url, "shared", "reserve")

    statuses = Counter(status for status, _, _ in outcome)
    assert statuses == Counter({"ok": CREDITS, "insufficient": PROCESSES * CALLS - CREDITS})
    state = await engine.status("shared")
    assert state is not None and (state.plan_credits, state.bonus_credits) == (0, 0)

    events = await outbox_events(real_redis, "shared")
    assert [e.kind for e in events] == ["open"]  # reserves emit nothing
    held = await state_of(real_redis, "shared")
    assert (held["hp"], held["hb"]) == (CREDITS, 0)
    held = sorted(rid for status, rid, _ in outcome if status == "ok")
    assert len(set(held)) == CREDITS
    bucket = keys.bucket_of("shared")
    assert await real_redis.zcard(keys.deadlines(bucket)) == CREDITS


async def test_concurrent_mixed_calls_keep_the_ledger_whole(
    real_redis: Any, redis_url: str
) -> None:
    engine = CreditEngine(real_redis, TIERS)
    await engine.open("mixed")
    outcome = await asyncio.to_thread(run_workers, redis_url, "mixed", "mixed")

    events = await outbox_events(real_redis, "mixed")
    assert_never_negative_and_whole(events)
    state = await engine.status("mixed")
    assert state is not None
    assert (state.plan_credits, state.bonus_credits, state.version) == (
        events[-1].plan, events[-1].bonus, events[-1].v,
    )  # fmt: skip

    # every call that changed something left exactly one event, and nothing else did
    changed = Counter(status for status, _, _ in outcome)
    kinds = Counter(e.kind for e in events)
    assert kinds == Counter(
        {
            "open": 1,
            "charge": changed["charged"],
            "refund": changed["refunded"],
            "grant": changed["granted"],
        }
    )
    assert changed["ok"] == changed["charged"] + changed["refunded"]  # each held, closed once
    assert changed["ok"] > CREDITS // 2 and changed["charged_before"] + changed["refunded_before"]
    assert state.total_tokens == sum(n for status, _, n in outcome if status == "charged")
    for rid, count in Counter(e.rid for e in events if e.kind in ("charge", "refund")).items():
        assert count == 1, rid
    assert await real_redis.zcard(keys.deadlines(keys.bucket_of("mixed"))) == 0
