"""Accounts and reservations are packed strings in Redis (``gateway.credits.packed``): what the
scripts write reads back in Python and the other way round, on Redis's Lua (its struct
library) and fakeredis's (common.lua's packing in Lua) alike; and the hashes the release
before kept them in are still read, then written packed when they next change."""

from __future__ import annotations

from collections.abc import Callable

from gateway.credits import keys
from gateway.credits.engine import CreditEngine
from gateway.credits.scopes import KeyRules
from tests.support.redisstate import change_state, hold_of, state_of

MakeEngine = Callable[..., CreditEngine]
ACCOUNT_FIELDS = ("plan", "bonus", "tier", "sub", "se", "pe", "tt", "mt", "v", "hp", "hb")


async def test_what_the_scripts_pack_python_reads(make_engine: MakeEngine) -> None:
    engine = make_engine()
    await engine.open("p1", tier="pro", months=1)
    await engine.grant("p1", 3, reason="gift")
    limited = KeyRules("key-1", credit_limit=50)
    held = await engine.reserve("p1", "r1", 101, key_id="key-1", rules=limited, route="/api/")
    assert held.status == "key_credit_limit"
    held = await engine.reserve("p1", "r1", 40, key_id="key-1", rules=limited, route="/api/")
    assert held.held and held.account is not None

    state = await state_of(engine.redis, "p1")
    account = held.account
    assert (state["plan"], state["bonus"], state["tier"], state["v"]) == (
        account.plan_credits, account.bonus_credits, "pro", account.version,
    )  # fmt: skip
    assert (state["hp"], state["hb"], state["sub"], state["pe"]) == (
        40, 0, 1, account.period_end_ms,
    )  # fmt: skip
    hold = await hold_of(engine.redis, "p1", "r1")
    assert {name: hold[name] for name in ("st", "pp", "bp", "k", "rt", "kc", "chg", "ret")} == {
        "st": "held", "pp": 40, "bp": 0, "k": "key-1", "rt": "/api/", "kc": 40, "chg": None,
        "ret": None,
    }  # fmt: skip
    assert hold["kp"] == account.period_end_ms

    settled = await engine.settle("p1", "r1", 2000, charge=25)
    assert settled.status == "charged"
    hold = await hold_of(engine.redis, "p1", "r1")
    assert (hold["st"], hold["chg"]) == ("charged", 25)


async def test_negative_and_large_numbers_cross_both_ways(make_engine: MakeEngine) -> None:
    engine = make_engine()
    await engine.open("p2")
    await change_state(engine.redis, "p2", bonus=-3, tt=2**52 + 1)
    state = await engine.status("p2")
    assert state is not None and (state.bonus_credits, state.total_tokens) == (-3, 2**52 + 1)
    assert (await engine.grant("p2", 1, reason="back")).account is not None
    assert (await state_of(engine.redis, "p2"))["bonus"] == -2


async def test_a_retry_is_a_duplicate_even_when_the_account_could_not_pay_it_now(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    await engine.open("p3")  # 5 credits
    assert (await engine.reserve("p3", "all", 5)).held
    again = await engine.reserve("p3", "all", 5)
    assert (again.status, again.state, again.held) == ("duplicate", "held", False)
    assert (await engine.reserve("p3", "new", 1)).status == "insufficient"


async def as_the_release_before(engine: CreditEngine, account: str, *request_ids: str) -> None:
    """Rewrite an account and its reservations as hashes, the form the release before kept."""
    state = await state_of(engine.redis, account)
    names = keys.account_keys(account)
    await engine.redis.delete(names.state)
    await engine.redis.hset(names.state, mapping={f: state[f] for f in ACCOUNT_FIELDS})
    for request_id in request_ids:
        hold = await hold_of(engine.redis, account, request_id)
        fields = {"st": hold["st"], "pp": hold["pp"], "bp": hold["bp"], "dl": hold["dl"]}
        await engine.redis.delete(names.reservation(request_id))
        await engine.redis.hset(names.reservation(request_id), mapping=fields)


async def test_hashes_of_the_release_before_are_read_and_written_packed(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    await engine.open("old", tier="pro", months=1)
    for request_id in ("a", "b", "c"):
        assert (await engine.reserve("old", request_id, 2)).held
    await as_the_release_before(engine, "old", "a", "b", "c")
    names = keys.account_keys("old")
    assert (await hold_of(engine.redis, "old", "a"))["st"] == "held"  # Python reads a hash too

    status = await engine.status("old")
    assert status is not None and status.plan_credits == 94
    dup = await engine.reserve("old", "a", 2)
    assert (dup.status, dup.state) == ("duplicate", "held")
    assert await engine.extend("old", "c")
    assert (await engine.settle("old", "a", 4000)).status == "charged"
    assert (await engine.refund("old", "b", reason="failed")).status == "refunded"
    assert (await engine.settle("old", "c", 2000, charge=1)).status == "charged"

    for name in (names.state, *(names.reservation(r) for r in "abc")):
        assert await engine.redis.type(name) in ("string", b"string"), name
    state = await state_of(engine.redis, "old")
    assert (state["plan"], state["hp"], state["tt"]) == (97, 0, 6000)
    assert [(await hold_of(engine.redis, "old", r))["st"] for r in "abc"] == [
        "charged", "refunded", "charged",
    ]  # fmt: skip
    assert (await engine.settle("old", "a", 4000)).status == "charged_before"
