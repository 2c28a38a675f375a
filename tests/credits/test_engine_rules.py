"""Every credit rule and every status of every script, by example, on fakeredis and real Redis.

The ``scenario_*`` bodies (tests/support/engine_scenarios.py) take only an engine and its clock,
so test_engine_cluster.py runs them unchanged on a Redis Cluster.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.credits import keys
from gateway.credits.engine import CreditEngine
from gateway.errors import Unavailable
from gateway.settings import DEFAULT_TIERS, Tier
from tests.support.engine_model import MONTH_MS, MovableClock, outbox_events
from tests.support.engine_scenarios import (
    SCENARIOS,
    assert_ledger_whole,
    kinds,
    scenario_library_reloads_when_redis_forgot_it,
)
from tests.support.redisstate import state_of

MakeEngine = Callable[..., CreditEngine]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__[9:])
async def test_scenario(scenario: Any, make_engine: MakeEngine, clock: MovableClock) -> None:
    await scenario(make_engine(), clock)


# -- open ----------------------------------------------------------------------------------------


async def test_open_free_holds_the_free_allowance(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    change = await make_engine().open("a1")
    assert change.status == "opened" and change.account is not None
    a = change.account
    assert (a.plan_credits, a.bonus_credits, a.tier, a.subscribed) == (5, 0, "free", False)
    assert (a.subscription_ends_ms, a.period_end_ms) == (None, clock() + MONTH_MS)
    assert a.version == clock() * 1000  # the scripts' clock in us
    assert (a.allowance, a.requests_per_minute, a.now_ms) == (5, 20, clock())


async def test_open_paid_for_months_and_open_ended(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    engine = make_engine()
    months = (await engine.open("a1", tier="pro", months=2)).account
    assert months is not None
    assert (months.plan_credits, months.subscribed) == (100, True)
    assert months.subscription_ends_ms == clock() + 2 * MONTH_MS
    endless = (await engine.open("a2", tier="enterprise")).account
    assert endless is not None
    assert (endless.plan_credits, endless.subscribed, endless.subscription_ends_ms) == (
        1000, True, None,
    )  # fmt: skip
    clock.advance(50 * MONTH_MS)
    later = await engine.status("a2")
    assert later is not None and (later.tier, later.plan_credits) == ("enterprise", 1000)


async def test_open_twice_changes_nothing(make_engine: MakeEngine) -> None:
    engine = make_engine()
    first = await engine.open("a1", tier="pro", months=1)
    second = await engine.open("a1", tier="free")
    assert second.status == "exists" and second.account == first.account
    assert await kinds(engine, "a1") == ["open"]


@pytest.mark.parametrize("tier", ["platinum", "pr", "pro-", "free=5/20;pro", "%d+"])
async def test_open_unknown_tier(make_engine: MakeEngine, tier: str) -> None:
    """Unknown, a prefix of a known one, or spelled to match across the tiers' spec: none is
    a tier."""
    engine = make_engine()
    change = await engine.open("a1", tier=tier)
    assert (change.status, change.account) == ("unknown_tier", None)
    assert await engine.status("a1") is None
    assert await kinds(engine, "a1") == []
    with pytest.raises(ValueError):
        await engine.open("a1", tier="pro", months=-1)


# -- reserve -------------------------------------------------------------------------------------


async def test_reserve_holds_and_missing(make_engine: MakeEngine) -> None:
    engine = make_engine()
    assert (await engine.reserve("nobody", "r1", 1)).status == "missing"
    await engine.open("a1")
    r = await engine.reserve("a1", "r1", 2)
    assert (r.status, r.held, r.state, r.rate_remaining, r.rate_wait_ms) == (
        "ok", True, "held", 19, 3000,
    )  # fmt: skip
    assert r.account is not None and r.account.plan_credits == 3
    with pytest.raises(ValueError):
        await engine.reserve("a1", "r2", 0)


async def test_reserve_duplicate_holds_nothing(make_engine: MakeEngine) -> None:
    engine = make_engine()
    await engine.open("a1")
    await engine.reserve("a1", "r1", 1)
    dup = await engine.reserve("a1", "r1", 1)
    assert (dup.status, dup.state, dup.held) == ("duplicate", "held", False)
    assert dup.account is not None and dup.account.plan_credits == 4
    assert dup.rate_remaining == 19  # a duplicate uses no rate either
    await engine.settle("a1", "r1", 5)
    after = await engine.reserve("a1", "r1", 1)
    assert (after.status, after.state) == ("duplicate", "charged")
    assert await kinds(engine, "a1") == ["open", "charge"]  # one event per request


async def test_reserve_spends_plan_before_bonus(make_engine: MakeEngine) -> None:
    engine = make_engine()
    await engine.open("a1")
    await engine.grant("a1", 3, reason="gift")
    r = await engine.reserve("a1", "r1", 7)
    assert r.account is not None
    assert (r.account.plan_credits, r.account.bonus_credits) == (0, 1)
    assert await kinds(engine, "a1") == ["open", "grant"]  # a reserve emits nothing
    held = await state_of(engine.redis, "a1")
    assert (held["hp"], held["hb"]) == (5, 2)  # the ledger still counts them the account's
    await engine.settle("a1", "r1", 1)
    charge = (await outbox_events(engine.redis, "a1"))[-1]
    assert (charge.kind, charge.dp, charge.db, charge.rp, charge.rb) == ("charge", -5, -2, 5, 2)
    assert (charge.plan, charge.bonus) == (0, 1)


async def test_insufficient_changes_neither_credits_nor_rate(make_engine: MakeEngine) -> None:
    engine = make_engine()
    await engine.open("a1")
    refused = await engine.reserve("a1", "big", 6)
    assert (refused.status, refused.held, refused.rate_remaining) == ("insufficient", False, 20)
    assert refused.account is not None and refused.account.plan_credits == 5
    assert (await engine.reserve("a1", "ok", 5)).rate_remaining == 19
    assert await kinds(engine, "a1") == ["open"]
    # the duplicate check knows nothing of a refused request id: it may try again
    await engine.grant("a1", 6, reason="top-up")
    assert (await engine.reserve("a1", "big", 6)).status == "ok"


async def test_insufficient_wins_over_rate(make_engine: MakeEngine) -> None:
    engine = make_engine()
    await engine.open("a1")
    await engine.grant("a1", 15, reason="enough for the burst")
    for i in range(20):
        assert (await engine.reserve("a1", f"r{i}", 1)).status == "ok"
    assert (await engine.reserve("a1", "x", 1)).status == "insufficient"
    await engine.grant("a1", 1, reason="one more")
    assert (await engine.reserve("a1", "x", 1)).status == "rate_limited"


async def test_rate_burst_is_exact_for_any_rpm(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    """A burst of exactly rpm calls even when 60000/rpm is not a whole ms (7: 8571.43 ms)."""
    engine = make_engine(tiers={"free": Tier(credits=1000, requests_per_minute=7)})
    await engine.open("a1")
    statuses = [(await engine.reserve("a1", f"r{i}", 1)).status for i in range(8)]
    assert statuses == ["ok"] * 7 + ["rate_limited"]
    clock.advance(8571)
    assert (await engine.reserve("a1", "r7", 1)).status == "rate_limited"
    clock.advance(1)
    assert (await engine.reserve("a1", "r7", 1)).status == "ok"


async def test_no_rate_limit_with_zero_rpm(make_engine: MakeEngine) -> None:
    engine = make_engine(tiers={"free": Tier(credits=500, requests_per_minute=0)})
    await engine.open("a1")
    answers = [await engine.reserve("a1", f"r{i}", 1) for i in range(300)]
    assert {(r.status, r.rate_remaining, r.rate_wait_ms) for r in answers} == {("ok", None, 0)}


# -- settle and refund ---------------------------------------------------------------------------


@pytest.mark.parametrize("soon", [False, True], ids=["settle", "settle_soon"])
async def test_settle_charges_tokens_once(make_engine: MakeEngine, soon: bool) -> None:
    engine = make_engine()
    await engine.open("a1")
    await engine.reserve("a1", "r1", 2)
    if soon:  # the proxy's way: a future, not awaited by the request, with no account
        s = await engine.settle_soon("a1", "r1", 4000)
        assert s.account is None
        after = await engine.status("a1")
    else:
        s = await engine.settle("a1", "r1", 4000)
        after = s.account
    assert (s.status, s.credits, s.returned) == ("charged", 2, 0)
    assert after is not None
    assert (after.plan_credits, after.total_tokens, after.monthly_tokens) == (3, 4000, 4000)
    again = await engine.settle("a1", "r1", 9999)
    assert again.account is not None and again.account.version == after.version
    assert (again.status, again.credits, again.account) == ("charged_before", 2, after)
    refund = await engine.refund("a1", "r1", reason="late")
    assert (refund.status, refund.credits) == ("charged_before", 0)
    assert await kinds(engine, "a1") == ["open", "charge"]
    with pytest.raises(ValueError):
        await engine.settle("a1", "r1", -1)


async def test_settled_reservation_is_remembered_for_retain_ms(make_engine: MakeEngine) -> None:
    engine = make_engine()
    await engine.open("a1")
    await engine.reserve("a1", "r1", 1)
    held_key = keys.account_keys("a1").reservation("r1")
    assert await engine.redis.pttl(held_key) == -1  # a held reservation waits for its end
    await engine.settle("a1", "r1", 1, retain_ms=500_000)
    assert 0 < await engine.redis.pttl(held_key) <= 500_000


async def test_refund_gives_back_once(make_engine: MakeEngine) -> None:
    engine = make_engine()
    await engine.open("a1")
    await engine.reserve("a1", "r1", 3)
    r = await engine.refund("a1", "r1", reason="upstream 500")
    assert (r.status, r.credits) == ("refunded", 3)
    assert r.account is not None and r.account.plan_credits == 5
    again = await engine.refund("a1", "r1", reason="again")
    assert (again.status, again.credits) == ("refunded_before", 0)
    settle = await engine.settle("a1", "r1", 10)
    assert (settle.status, settle.credits) == ("refunded_before", 3)
    assert settle.account is not None and settle.account.total_tokens == 0
    assert await kinds(engine, "a1") == ["open", "refund"]


async def test_settle_and_refund_of_unknown(make_engine: MakeEngine) -> None:
    engine = make_engine()
    assert (await engine.settle("nobody", "r1", 1)).status == "unknown"
    await engine.open("a1")
    s = await engine.settle("a1", "never", 1)
    r = await engine.refund("a1", "never", reason="x")
    assert (s.status, s.account, s.credits) == ("unknown", None, 0)
    assert (r.status, r.account, r.credits) == ("unknown", None, 0)
    assert await kinds(engine, "a1") == ["open"]


async def test_refund_plan_up_to_allowance_bonus_in_full(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    engine = make_engine()
    await engine.open("a1")
    await engine.grant("a1", 2, reason="gift")
    await engine.reserve("a1", "r1", 7)  # all 5 plan and 2 bonus
    clock.advance(MONTH_MS)  # the period ends: plan refills to 5 while r1 is out
    r = await engine.refund("a1", "r1", reason="timeout")
    assert (r.status, r.credits) == ("refunded", 2)
    assert r.account is not None
    assert (r.account.plan_credits, r.account.bonus_credits) == (5, 2)
    assert await kinds(engine, "a1") == ["open", "grant", "reset", "refund"]
    refund = (await outbox_events(engine.redis, "a1"))[-1]
    # what it held, and what the refund could not give back: the 5 plan credits, over the
    # allowance the reset refilled
    assert (refund.rp, refund.rb, refund.dp, refund.db) == (5, 2, -5, 0)
    await assert_ledger_whole(engine, "a1")


async def test_settle_after_period_end_counts_tokens_in_the_new_period(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    engine = make_engine()
    await engine.open("a1")
    await engine.reserve("a1", "r1", 1)
    clock.advance(MONTH_MS)
    s = await engine.settle("a1", "r1", 700)
    assert s.account is not None
    assert (s.account.monthly_tokens, s.account.total_tokens, s.account.plan_credits) == (
        700, 700, 5,
    )  # fmt: skip
    assert await kinds(engine, "a1") == ["open", "reset", "charge"]


# -- grant ---------------------------------------------------------------------------------------


async def test_grant_adds_bonus_that_survives_everything(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    engine = make_engine()
    assert (await engine.grant("nobody", 1, reason="x")).status == "missing"
    await engine.open("a1")
    g = await engine.grant("a1", 4, reason="support ticket 12", request_id="t12")
    assert g.status == "granted" and g.account is not None
    assert (g.account.plan_credits, g.account.bonus_credits) == (5, 4)
    await engine.set_tier("a1", "upgrade", tier="pro", months=1)
    await engine.set_tier("a1", "renew", months=1)
    await engine.set_tier("a1", "downgrade")
    clock.advance(3 * MONTH_MS)
    state = await engine.status("a1")
    assert state is not None and state.bonus_credits == 4
    with pytest.raises(ValueError):
        await engine.grant("a1", 0, reason="nothing")


async def test_a_replayed_grant_or_tier_change_applies_once(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    """A client that re-sends the script after a lost reply (redis-py retries on connection
    errors) sends the same request id: the replay answers as the first did, changing nothing."""
    engine = make_engine()
    await engine.open("a1")
    first = await engine.grant("a1", 4, reason="ticket", request_id="op_1")
    replay = await engine.grant("a1", 4, reason="ticket", request_id="op_1")
    assert (first.status, replay.status) == ("granted", "granted")
    assert replay.account == first.account
    other = await engine.grant("a1", 4, reason="ticket", request_id="op_2")
    assert other.account is not None and other.account.bonus_credits == 8
    up = await engine.set_tier("a1", "upgrade", tier="pro", months=1, request_id="op_3")
    renewed = await engine.set_tier("a1", "renew", months=2, request_id="op_4")
    again = await engine.set_tier("a1", "renew", months=2, request_id="op_4")
    assert (renewed.status, again.status) == ("renewed", "renewed")
    assert up.account is not None and again.account is not None
    assert again.account.subscription_ends_ms == clock() + 3 * MONTH_MS
    assert again.account.version == renewed.account.version  # type: ignore[union-attr]
    for _ in range(2):  # no request id: no replay protection asked for
        await engine.grant("a1", 1, reason="anonymous")
    state = await engine.status("a1")
    assert state is not None and state.bonus_credits == 10
    assert await kinds(engine, "a1") == [
        "open", "grant", "grant", "upgrade", "renew", "grant", "grant",
    ]  # fmt: skip


# -- set_tier ------------------------------------------------------------------------------------


async def test_upgrade(make_engine: MakeEngine, clock: MovableClock) -> None:
    engine = make_engine()
    await engine.open("a1")
    await engine.grant("a1", 2, reason="gift")
    await engine.reserve("a1", "r1", 1)
    up = await engine.set_tier("a1", "upgrade", tier="enterprise", months=3, reason="sales")
    assert up.status == "upgraded" and up.account is not None
    a = up.account
    assert (a.tier, a.subscribed, a.subscription_ends_ms) == (
        "enterprise", True, clock() + 3 * MONTH_MS,
    )  # fmt: skip
    assert (a.plan_credits, a.bonus_credits, a.requests_per_minute) == (1000, 2, 600)
    last = (await outbox_events(engine.redis, "a1"))[-1]
    assert (last.kind, last.dp, last.note) == ("upgrade", 996, "sales")


async def test_upgrade_to_free_or_unknown_changes_nothing(make_engine: MakeEngine) -> None:
    engine = make_engine()
    assert (await engine.set_tier("nobody", "upgrade", tier="pro", months=1)).status == "missing"
    await engine.open("a1")
    for tier in ("free", "platinum", ""):
        change = await engine.set_tier("a1", "upgrade", tier=tier, months=1)
        assert (change.status, change.account) == ("unknown_tier", None)
    assert await kinds(engine, "a1") == ["open"]
    with pytest.raises(ValueError):
        await engine.set_tier("a1", "upgrade", tier="pro", months=0)


async def test_renew_moves_the_end_from_the_current_end(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    engine = make_engine()
    t0 = clock()
    await engine.open("a1", tier="pro", months=1)
    await engine.reserve("a1", "r1", 10)
    clock.advance(1000)
    renewed = await engine.set_tier("a1", "renew", months=2)
    assert renewed.status == "renewed" and renewed.account is not None
    assert renewed.account.subscription_ends_ms == t0 + 3 * MONTH_MS
    assert renewed.account.plan_credits == 90  # a renewal refills nothing
    last = (await outbox_events(engine.redis, "a1"))[-1]
    assert (last.kind, last.dp, last.se) == ("renew", 0, t0 + 3 * MONTH_MS)


async def test_renew_without_subscription(make_engine: MakeEngine, clock: MovableClock) -> None:
    engine = make_engine()
    await engine.open("free1")
    change = await engine.set_tier("free1", "renew", months=1)
    assert change.status == "not_subscribed" and change.account is not None
    assert change.account.tier == "free"
    await engine.open("pro1", tier="pro", months=1)
    clock.advance(MONTH_MS)  # the subscription has ended: renew finds it expired
    late = await engine.set_tier("pro1", "renew", months=1)
    assert late.status == "not_subscribed" and late.account is not None
    assert (late.account.tier, late.account.plan_credits) == ("free", 5)
    assert await kinds(engine, "free1") == ["open"]
    assert await kinds(engine, "pro1") == ["open", "expire", "reset"]


async def test_renew_of_an_open_ended_subscription_keeps_it_open(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    await engine.open("a1", tier="pro")
    change = await engine.set_tier("a1", "renew", months=1)
    assert change.status == "renewed" and change.account is not None
    assert (change.account.subscribed, change.account.subscription_ends_ms) == (True, None)


async def test_downgrade(make_engine: MakeEngine) -> None:
    engine = make_engine()
    assert (await engine.set_tier("nobody", "downgrade")).status == "missing"
    await engine.open("a1", tier="pro", months=1)
    await engine.grant("a1", 7, reason="gift")
    down = await engine.set_tier("a1", "downgrade", reason="cancelled")
    assert down.status == "downgraded" and down.account is not None
    a = down.account
    assert (a.tier, a.subscribed, a.subscription_ends_ms) == ("free", False, None)
    assert (a.plan_credits, a.bonus_credits, a.allowance) == (5, 7, 5)
    await engine.open("a2")
    await engine.reserve("a2", "r1", 4)
    low = await engine.set_tier("a2", "downgrade")
    assert low.account is not None and low.account.plan_credits == 1  # min(current, 5)


# -- status, rollover, expiry --------------------------------------------------------------------


async def test_status_missing_and_read(make_engine: MakeEngine, clock: MovableClock) -> None:
    engine = make_engine()
    assert await engine.status("nobody") is None
    await engine.open("a1")
    state = await engine.status("a1")
    assert state is not None
    assert (state.credits_remaining, state.ms_to_period_end) == (5, MONTH_MS)
    assert await kinds(engine, "a1") == ["open"]


async def test_rollover_refills_and_advances_whole_periods(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    engine = make_engine()
    t0 = clock()
    await engine.open("a1")
    await engine.reserve("a1", "r1", 3)
    await engine.settle("a1", "r1", 6000)
    clock.advance(MONTH_MS - 1)
    before = await engine.status("a1")
    assert before is not None and (before.plan_credits, before.monthly_tokens) == (2, 6000)
    clock.advance(1)  # at the period end exactly
    at = await engine.status("a1")
    assert at is not None
    assert (at.plan_credits, at.monthly_tokens, at.total_tokens) == (5, 0, 6000)
    assert at.period_end_ms == t0 + 2 * MONTH_MS
    clock.advance(int(2.5 * MONTH_MS))
    later = await engine.status("a1")
    assert later is not None and later.period_end_ms == t0 + 4 * MONTH_MS
    assert await kinds(engine, "a1") == ["open", "charge", "reset", "reset"]
    await assert_ledger_whole(engine, "a1")


async def test_expiry_downgrades_on_next_touch(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    engine = make_engine()
    await engine.open("a1")
    clock.advance(86_400_000)
    await engine.set_tier("a1", "upgrade", tier="pro", months=1)
    await engine.grant("a1", 1, reason="gift")
    clock.advance(MONTH_MS)  # past the period end (day 30), then the end of the month (day 31)
    r = await engine.reserve("a1", "r1", 1)
    assert r.status == "ok" and r.account is not None
    a = r.account
    assert (a.tier, a.subscribed, a.plan_credits, a.bonus_credits) == ("free", False, 4, 1)
    assert await kinds(engine, "a1") == ["open", "upgrade", "grant", "reset", "expire"]


async def test_expiry_and_period_end_at_the_same_ms(
    make_engine: MakeEngine, clock: MovableClock
) -> None:
    """An expiry is applied before a period end falling at the same ms: refill at free."""
    engine = make_engine()
    await engine.open("a1", tier="pro", months=1)
    clock.advance(MONTH_MS)
    state = await engine.status("a1")
    assert state is not None and (state.tier, state.plan_credits) == ("free", 5)
    assert await kinds(engine, "a1") == ["open", "expire", "reset"]


async def test_paid_tier_smaller_than_free_refills_at_free_after_expiry(
    any_redis: Any, clock: MovableClock
) -> None:
    tiers = dict(DEFAULT_TIERS) | {"mini": Tier(credits=2, requests_per_minute=0)}
    engine = CreditEngine(any_redis, tiers, clock=clock)
    await engine.open("a1", tier="mini", months=1)
    clock.advance(MONTH_MS // 2)
    await engine.set_tier("a1", "renew", months=1)  # ends at 2 months: after the first reset
    clock.advance(2 * MONTH_MS)
    state = await engine.status("a1")
    assert state is not None and (state.tier, state.plan_credits) == ("free", 5)
    assert await kinds(engine, "a1") == ["open", "renew", "reset", "expire", "reset"]


# -- the clock -----------------------------------------------------------------------------------


async def server_ms(redis: Any) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_redis_time_is_the_clock_without_one(any_redis: Any, make_engine: MakeEngine) -> None:
    engine = make_engine(clock=None, hold_ms=1)
    before = await server_ms(any_redis)
    opened = (await engine.open("a1")).account
    after = await server_ms(any_redis)
    assert opened is not None
    assert before <= opened.now_ms <= after
    assert opened.period_end_ms == opened.now_ms + MONTH_MS
    await engine.reserve("a1", "r1", 1)
    deadline = time.monotonic() + 10
    found: list[tuple[str, str]] = []
    while not found and time.monotonic() < deadline:
        found = await engine.overdue(keys.bucket_of("a1"))
    assert found == [("a1", "r1")]


# -- Redis trouble -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True])
async def test_library_reloads_when_redis_forgot_it(
    make_engine: Callable[..., CreditEngine], clock: MovableClock, batch: bool
) -> None:
    # On the shared Redis too: any other test's engine that finds the library gone loads it.
    engine = make_engine(batch=batch)
    await scenario_library_reloads_when_redis_forgot_it(engine, clock)


async def test_redis_down_is_storage_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])  # closed again: nothing listens there
    client = aioredis.Redis(
        host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2
    )
    engine = CreditEngine(client, DEFAULT_TIERS)
    try:
        with pytest.raises(Unavailable):
            await engine.reserve("a1", "r1", 1)
        with pytest.raises(Unavailable):
            await engine.overdue(0)
    finally:
        await client.aclose()
