"""Representative engine scenarios that take only an engine and its clock.

tests/credits/test_engine_rules.py runs them on fakeredis and a real Redis, and
tests/credits/test_engine_cluster.py on a Redis Cluster: one body, every backend.
"""

from __future__ import annotations

from gateway.credits import keys, scripts
from gateway.credits.engine import CreditEngine
from gateway.credits.results import Snapshot
from gateway.credits.scopes import KeyRules
from tests.support.engine_model import MONTH_MS, Event, MovableClock, outbox_events
from tests.support.redisstate import state_of


async def kinds(engine: CreditEngine, account: str) -> list[str]:
    return [e.kind for e in await outbox_events(engine.redis, account)]


async def assert_ledger_whole(engine: CreditEngine, account: str) -> list[Event]:
    """Versions strictly increasing up to the account's, and the deltas add up to the
    balance with the credits its open reservations hold."""
    events = await outbox_events(engine.redis, account)
    state = await engine.status(account)
    assert state is not None
    held = await state_of(engine.redis, account)
    hp, hb = int(held["hp"]), int(held["hb"])
    versions = [e.v for e in events]
    assert versions == sorted(set(versions)) and versions[-1] == state.version
    assert sum(e.dp for e in events) == state.plan_credits + hp
    assert sum(e.db for e in events) == state.bonus_credits + hb
    return events


# -- scenarios shared with the cluster tests ---------------------------------------------------


async def scenario_outbox_exact(engine: CreditEngine, clock: MovableClock) -> None:
    t0 = clock.now_ms
    await engine.open("ann", tier="free", reason="signup")
    await engine.grant("ann", 3, reason="welcome", request_id="g1")
    assert (await engine.reserve("ann", "r1", 2)).status == "ok"
    clock.advance(10)
    assert (await engine.settle("ann", "r1", 3100)).status == "charged"
    assert (await engine.reserve("ann", "r2", 5)).status == "ok"  # 3 plan, then 2 bonus
    assert (await engine.refund("ann", "r2", reason="upstream 502")).status == "refunded"
    assert (await engine.set_tier("ann", "upgrade", tier="pro", months=1)).status == "upgraded"
    events = await assert_ledger_whole(engine, "ann")
    pe, se = t0 + MONTH_MS, t0 + 10 + MONTH_MS
    v0, v1 = t0 * 1000, (t0 + 10) * 1000  # versions: max(v + 1, the clock in us)
    assert events == [
        Event("open", 5, 0, 0, "", "signup", t0, v0, 5, 0, "free", 0, 0, pe, 0, 0),
        Event("grant", 0, 3, 0, "g1", "welcome", t0, v0 + 1, 5, 3, "free", 0, 0, pe, 0, 0),
        # a reserve emits nothing: its settle or refund is the request's one event
        Event("charge", -2, 0, 3100, "r1", "", t0 + 10, v1, 3, 3, "free", 0, 0, pe, 3100, 3100,
              2, 0),
        Event("refund", 0, 0, 0, "r2", "upstream 502", t0 + 10, v1 + 1, 3, 3, "free", 0, 0, pe,
              3100, 3100, 3, 2),
        Event("upgrade", 97, 0, 0, "", "", t0 + 10, v1 + 2, 100, 3, "pro", 1, se, pe, 3100, 3100),
    ]  # fmt: skip


async def scenario_rate_limit(engine: CreditEngine, clock: MovableClock) -> None:
    """free: 20 a minute as a burst, then one every 3 s; a refused call costs nothing."""
    await engine.open("bob")
    await engine.grant("bob", 100, reason="test")
    for i in range(20):
        r = await engine.reserve("bob", f"r{i}", 1)
        assert (r.status, r.rate_remaining) == ("ok", 19 - i)
    refused = await engine.reserve("bob", "r20", 1)
    got = (refused.status, refused.rate_remaining, refused.rate_wait_ms)
    assert got == ("rate_limited", 0, 3000)
    assert refused.account is not None and refused.account.credits_remaining == 85
    clock.advance(2999)
    assert (await engine.reserve("bob", "r20", 1)).status == "rate_limited"
    clock.advance(1)
    again = await engine.reserve("bob", "r20", 1)
    assert (again.status, again.rate_remaining, again.rate_wait_ms) == ("ok", 0, 60000)
    assert await kinds(engine, "bob") == ["open", "grant"]  # reserves emit nothing


async def scenario_expiry_then_rollovers(engine: CreditEngine, clock: MovableClock) -> None:
    """A period end before the expiry refills at pro, the expiry, then a period end at free."""
    t0 = clock.now_ms
    await engine.open("cat")
    clock.advance(MONTH_MS - 10 * 86_400_000)
    await engine.set_tier("cat", "upgrade", tier="pro", months=1)  # ends at t0 + 50 days
    clock.advance(MONTH_MS + 10 * 86_400_000)  # t0 + 60 days: past t0+30d, se, t0+60d
    state = await engine.status("cat")
    assert state is not None
    assert (state.tier, state.subscribed, state.subscription_ends_ms) == ("free", False, None)
    assert (state.plan_credits, state.period_end_ms) == (5, t0 + 3 * MONTH_MS)
    events = await assert_ledger_whole(engine, "cat")
    assert [(e.kind, e.dp, e.plan, e.tier) for e in events[2:]] == [
        ("reset", 0, 100, "pro"),
        ("expire", -95, 5, "free"),
        ("reset", 0, 5, "free"),
    ]


async def scenario_overdue(engine: CreditEngine, clock: MovableClock) -> None:
    await engine.open("dan")
    bucket = keys.bucket_of("dan")
    assert (await engine.reserve("dan", "slow", 1)).status == "ok"
    assert (await engine.reserve("dan", "done", 1)).status == "ok"
    await engine.settle("dan", "done", 10)
    clock.advance(engine.hold_ms - 1)
    assert await engine.overdue(bucket) == []
    clock.advance(1)
    assert await engine.overdue(bucket) == [("dan", "slow")]
    assert (await engine.refund("dan", "slow", reason="reaped")).status == "refunded"
    assert await engine.overdue(bucket) == []


async def scenario_restore(engine: CreditEngine, clock: MovableClock) -> None:
    snap = Snapshot(7, 2, "pro", True, clock.now_ms + 5, clock.now_ms + 9, 400, 300, 41)
    restored = await engine.restore("eve", snap)
    assert restored.status == "restored" and restored.account is not None
    a = restored.account
    got = (a.plan_credits, a.bonus_credits, a.tier, a.subscribed, a.subscription_ends_ms)
    assert got == (7, 2, "pro", True, clock.now_ms + 5)
    assert (a.period_end_ms, a.total_tokens, a.monthly_tokens, a.version) == (
        clock.now_ms + 9, 400, 300, clock.now_ms * 1000,
    )  # fmt: skip
    other = Snapshot(1, 1, "free", False, None, clock.now_ms, 0, 0, 99)
    again = await engine.restore("eve", other)
    assert again.status == "exists" and again.account == a
    assert await kinds(engine, "eve") == ["restore"]


async def scenario_metered(engine: CreditEngine, clock: MovableClock) -> None:
    """A metered hold: the upper bound, or all the account has; the settle charges part of it
    and gives the rest back (bonus first) in the same script; never more than was held."""
    t0 = clock.now_ms
    pe = t0 + MONTH_MS
    await engine.open("mia", tier="free", reason="signup")  # 5 plan credits
    await engine.grant("mia", 2, reason="gift", request_id="g1")
    held = await engine.reserve("mia", "m1", 6, least=1)  # 5 plan, then 1 bonus
    assert (held.status, held.hold) == ("ok", 6)
    settled = await engine.settle("mia", "m1", 2500, charge=2)
    assert (settled.status, settled.credits, settled.returned) == ("charged", 2, 4)
    assert settled.account is not None and settled.account.credits_remaining == 5
    again = await engine.settle("mia", "m1", 2500, charge=1)  # a repeat changes nothing
    assert (again.status, again.credits, again.returned) == ("charged_before", 2, 0)
    short = await engine.reserve("mia", "m2", 9, least=2)  # 5 left: all of it is held
    assert (short.status, short.hold) == ("ok", 5)
    capped = await engine.settle("mia", "m2", 60_000, charge=30)
    assert (capped.credits, capped.returned) == (5, 0)
    assert capped.account is not None and capped.account.credits_remaining == 0
    refused = await engine.reserve("mia", "m3", 9, least=1)
    assert (refused.status, refused.hold) == ("insufficient", 0)
    events = await assert_ledger_whole(engine, "mia")
    assert [(e.kind, e.dp, e.db, e.tok, e.rid, e.rp, e.rb) for e in events] == [
        ("open", 5, 0, 0, "", 0, 0),
        ("grant", 0, 2, 0, "g1", 0, 0),
        ("charge", -2, 0, 2500, "m1", 5, 1),  # held 6, charged 2: 1 bonus and 3 plan back
        ("charge", -3, -2, 60_000, "m2", 3, 2),
    ]
    assert events[-1].tt == 62_500 and events[-1].pe == pe


async def scenario_restore_with_open_holds(engine: CreditEngine, clock: MovableClock) -> None:
    """The store counts held credits as the account's; restored while two reservations are
    still held, the account holds them again, and their settle and refund close them once."""
    await engine.open("gus", tier="free")
    await engine.grant("gus", 2, reason="welcome")
    assert (await engine.reserve("gus", "r1", 4)).held
    assert (await engine.reserve("gus", "r2", 2)).held  # 1 plan, 1 bonus
    events = await assert_ledger_whole(engine, "gus")
    await engine.redis.delete(keys.account_keys("gus").state)  # Redis lost it
    last = events[-1]
    snap = Snapshot(last.plan, last.bonus, "free", False, None, last.pe, 0, 0, last.v)
    assert (snap.plan_credits, snap.bonus_credits) == (5, 2)  # what the store has

    restored = await engine.restore("gus", snap)

    assert restored.account is not None
    assert (restored.account.plan_credits, restored.account.bonus_credits) == (0, 1)
    assert (await engine.settle("gus", "r1", 100)).status == "charged"
    refunded = await engine.refund("gus", "r2", reason="upstream 502")
    assert refunded.account is not None and refunded.credits == 2
    assert (refunded.account.plan_credits, refunded.account.bonus_credits) == (1, 2)
    events = await assert_ledger_whole(engine, "gus")
    assert [(e.kind, e.dp, e.db, e.rp, e.rb) for e in events] == [
        ("open", 5, 0, 0, 0),
        ("grant", 0, 2, 0, 0),
        ("restore", 0, 0, 0, 0),
        ("charge", -4, 0, 4, 0),
        ("refund", 0, 0, 1, 1),
    ]


async def scenario_key_limits(engine: CreditEngine, clock: MovableClock) -> None:
    """A key's own credit limit, rate, routes and expiry, checked with the account's in the
    reserve; what a metered settle or a refund does not charge goes back to the key's spend;
    the spend starts again with the account's period; every event names key and route."""
    t0 = clock.now_ms
    await engine.open("kim", tier="free")  # 5 plan credits, 20 a minute
    await engine.grant("kim", 20, reason="gift", request_id="g1")
    capped = KeyRules("key_c", credit_limit=4)

    async def through(rid: str, cost: int, rules: KeyRules, path: str = "/api/projects/x",
                      least: int | None = None):  # fmt: skip
        return await engine.reserve(
            "kim", rid, cost, least=least, key_id=rules.key_id, rules=rules,
            route="/api/projects", path=path,
        )  # fmt: skip

    first = await through("c1", 3, capped)
    assert (first.status, first.key_credits_left, first.key_credit_limit) == ("ok", 1, 4)
    over = await through("c2", 2, capped)  # the account has 22, the key 1
    assert (over.status, over.hold, over.key_credits_left) == ("key_credit_limit", 0, 1)
    assert over.account is not None and over.account.credits_remaining == 22
    metered = await through("c3", 5, capped, least=1)  # an upper bound: the key's 1 is held
    assert (metered.status, metered.hold, metered.key_credits_left) == ("ok", 1, 0)
    assert (await engine.refund("kim", "c1", reason="upstream 500")).credits == 3
    again = await through("c4", 3, capped)  # the refund gave 3 back
    assert (again.status, again.key_credits_left) == ("ok", 0)
    assert (await engine.settle("kim", "c4", 100, charge=1)).returned == 2
    after = await through("c5", 2, capped)  # 2 of c4 came back
    assert (after.status, after.key_credits_left) == ("ok", 0)

    paced = KeyRules("key_r", requests_per_minute=2)
    assert [(await through(f"r{i}", 1, paced)).status for i in range(3)] == [
        "ok", "ok", "key_rate_limited",
    ]  # fmt: skip
    slow = await through("r3", 1, paced)
    assert (slow.key_rate_remaining, slow.key_rate_wait_ms) == (0, 30_000)
    clock.advance(30_000)
    assert (await through("r3", 1, paced)).status == "ok"

    narrow = KeyRules("key_n", routes=("/api/review", "/v1"))
    assert (await through("n1", 1, narrow)).status == "route_not_allowed"
    assert (await through("n2", 1, narrow, path="/v1")).status == "ok"
    assert (await through("n3", 1, narrow, path="/api/reviewer")).status == "route_not_allowed"
    old = KeyRules("key_o", expires_at_ms=clock.now_ms)
    assert (await through("o1", 1, old)).status == "key_expired"

    clock.advance(MONTH_MS)  # a new period: the key's spend starts again
    fresh = await through("c6", 4, capped)
    assert (fresh.status, fresh.key_credits_left) == ("ok", 0)
    await engine.settle("kim", "c3", 10)
    await engine.refund("kim", "c5", reason="timeout")  # counted last period: not given back now
    assert (await through("c7", 1, capped)).status == "key_credit_limit"
    assert await engine.key_spend("kim", ["key_c", "key_r", "nope"]) == {
        "key_c": 4, "key_r": 0, "nope": 0,
    }  # fmt: skip
    state = await engine.status("kim")
    assert state is not None
    seeded = {"key_c": 2, "key_r": 6}  # the store's sums: a count only grows by them
    assert await engine.seed_key_spend("kim", state.period_end_ms - 1, seeded) == "moved"
    assert await engine.seed_key_spend("nobody", state.period_end_ms, seeded) == "missing"
    assert await engine.seed_key_spend("kim", state.period_end_ms, seeded) == "seeded"
    assert await engine.key_spend("kim", ["key_c", "key_r"]) == {"key_c": 4, "key_r": 6}
    await engine.forget_key("kim", "key_r")  # revoked: its fields go
    fields = await engine.redis.hgetall(keys.account_keys("kim").key_limits)
    assert not [name for name in fields if str(name).startswith("key_r|")]
    assert await engine.key_spend("kim", ["key_c", "key_r"]) == {"key_c": 4, "key_r": 0}
    events = await assert_ledger_whole(engine, "kim")
    closing = [e for e in events if e.kind in ("charge", "refund")]
    assert {(e.key, e.route) for e in closing} >= {("key_c", "/api/projects")}
    assert all(e.key and e.route == "/api/projects" for e in closing)
    assert events[0].ts == t0


SCENARIOS = [
    scenario_key_limits,
    scenario_outbox_exact,
    scenario_metered,
    scenario_rate_limit,
    scenario_expiry_then_rollovers,
    scenario_overdue,
    scenario_restore,
    scenario_restore_with_open_holds,
]


async def scenario_library_reloads_when_redis_forgot_it(
    engine: CreditEngine, clock: MovableClock
) -> None:
    """A restarted or failed-over Redis forgets the functions: "Function not found" loads the
    library again (each time, on every master of a cluster), and the call runs."""
    name = scripts.library().name
    await engine.open("flo")
    await engine.redis.function_delete(name)  # type: ignore[attr-defined]
    assert (await engine.reserve("flo", "r1", 1)).status == "ok"
    await engine.redis.function_delete(name)  # type: ignore[attr-defined]
    assert (await engine.settle("flo", "r1", 1)).status == "charged"
