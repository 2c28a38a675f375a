"""Random sequences of engine calls and clock jumps, compared with the model after every step.

Hypothesis drives a state machine over two accounts with small tiers, so credits run out, the
rate limit bites (free: 4 a minute; pro: 7 a minute, 60000/7 not a whole ms) and a paid tier
holds fewer credits than free. Requests come through API keys with their own limits (a credit
limit per period below the account's balance, which changes as the run goes, a rate, allowed
routes, an expiry) or none. The clock jumps a few seconds, weeks, or exactly onto a period
end or a subscription end. Every answer must equal the model's, and after every step each
account's outbox events and the overdue reservations must too. Runs on a real Redis, a Redis
Cluster and fakeredis (the embedded mode).

The engine is async and hypothesis is not: each example owns a private event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import fakeredis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio.cluster import RedisCluster

from gateway.credits import keys
from gateway.credits.engine import CreditEngine
from gateway.credits.results import Reservation, Settlement, TierChange
from gateway.credits.scopes import KeyRules
from gateway.settings import Tier
from tests.support.engine_model import (
    ChangeAnswer,
    CreditModel,
    ReserveAnswer,
    SettleAnswer,
    outbox_events,
    view_of,
)

T = TypeVar("T")

TIERS = {
    "free": Tier(credits=6, requests_per_minute=3),
    "pro": Tier(credits=9, requests_per_minute=7),
    "mini": Tier(credits=2, requests_per_minute=0),
}
ACCOUNTS = ("acct-a", "acct-b")
HOLD_MS = 600_000
DAY_MS = 86_400_000
START_MS = 1_790_000_000_000

# Bounded for a shared 2-core machine; no example database written into the repository.
BUDGET = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

accounts = st.sampled_from(ACCOUNTS)
request_ids = st.sampled_from([f"req-{i}" for i in range(6)])
picks = st.integers(0, 1000)
tiers = st.sampled_from([*TIERS, "gold"])
months = st.integers(min_value=1, max_value=2)
paths = st.sampled_from(["/api/review/x", "/api/projects", "/api/projectsX", "/v1/chat"])
key_ids = st.sampled_from(["k-limit", "k-all", "k-limit", "k-plain", "k-rate", "k-narrow", "k-old"])
operation_ids = st.sampled_from(["", "op-1", "op-2", "op-3"])
"""Grants and renewals: few ids, so replays of one happen ('' never replays)."""


class Clock:
    def __init__(self) -> None:
        self.now_ms = START_MS

    def __call__(self) -> int:
        return self.now_ms


def _reserve(r: Reservation) -> ReserveAnswer:
    view = None if r.account is None else view_of(r.account)
    return ReserveAnswer(
        r.status, view, r.rate_remaining, r.rate_wait_ms, r.state, r.hold,
        r.key_credits_left, r.key_rate_remaining, r.key_rate_wait_ms,
    )  # fmt: skip


def _key_rules(limit: int | None) -> dict[str, KeyRules | None]:
    """The keys of a run, by id: ``k-limit``'s credit limit moves as the run goes."""
    return {
        "k-plain": None,
        "k-limit": KeyRules("k-limit", credit_limit=limit),
        "k-rate": KeyRules("k-rate", requests_per_minute=2),
        "k-narrow": KeyRules("k-narrow", credit_limit=3, routes=("/api/projects", "/v1")),
        "k-old": KeyRules("k-old", expires_at_ms=START_MS + 5 * DAY_MS),
        "k-all": KeyRules("k-all", credit_limit=4, requests_per_minute=5, routes=("/",)),
    }


def _settle(s: Settlement) -> SettleAnswer:
    view = None if s.account is None else view_of(s.account)
    return SettleAnswer(s.status, view, s.credits, s.returned)


def _change(c: TierChange) -> ChangeAnswer:
    return ChangeAnswer(c.status, None if c.account is None else view_of(c.account))


class EngineMachine(RuleBasedStateMachine):
    """The engine on one Redis against the model; subclasses say which Redis."""

    redis_url: str | None = None  # None: fakeredis
    cluster_port: int | None = None  # a Redis Cluster's node instead

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        if self.cluster_port is not None:
            self.redis: Any = RedisCluster(
                host="127.0.0.1", port=self.cluster_port, decode_responses=True
            )
            self.run(self.redis.flushdb(target_nodes=RedisCluster.PRIMARIES))
        elif self.redis_url is None:
            self.redis = fakeredis.FakeAsyncRedis(decode_responses=True)
        else:
            self.redis = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
        if self.cluster_port is None:
            self.run(self.redis.flushdb())
        self.clock = Clock()
        # settled request ids remembered far beyond any example, as the model remembers them
        self.engine = CreditEngine(
            self.redis, TIERS, clock=self.clock, hold_ms=HOLD_MS, retain_ms=10**12
        )
        self.model = CreditModel(TIERS, hold_ms=HOLD_MS)
        self.fresh = 0
        self.key_rules = _key_rules(2)

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.redis.aclose())
        self.loop.close()

    @property
    def now(self) -> int:
        return self.clock.now_ms

    # -- calls -----------------------------------------------------------------------------------

    def _rid(self, acct: str, pick: int) -> str:
        """A request id this account reserved before (any state), or one it never used."""
        known = sorted(rid for a, rid in self.model.held if a == acct)
        return known[pick % len(known)] if known and pick % 8 else f"never-{pick}"

    @initialize(tier_a=st.sampled_from([*TIERS]), tier_b=st.sampled_from([*TIERS]), months=months)
    def open_both(self, tier_a: str, tier_b: str, months: int) -> None:
        for acct, tier in zip(ACCOUNTS, (tier_a, tier_b), strict=True):
            self.open(acct, tier, months)

    @rule(acct=accounts, tier=tiers, months=st.integers(0, 2))
    def open(self, acct: str, tier: str, months: int) -> None:
        got = _change(self.run(self.engine.open(acct, tier=tier, months=months)))
        assert got == self.model.open(acct, tier, months, self.now)

    @rule(acct=accounts, rid=request_ids, cost=st.integers(1, 3))
    def reserve(self, acct: str, rid: str, cost: int) -> None:
        got = _reserve(self.run(self.engine.reserve(acct, rid, cost)))
        assert got == self.model.reserve(acct, rid, cost, self.now)

    @rule(acct=accounts, rid=request_ids, bound=st.integers(1, 12), least=st.integers(1, 3))
    def reserve_metered(self, acct: str, rid: str, bound: int, least: int) -> None:
        """A metered request: an upper bound, all the account has when that is less."""
        least = min(least, bound)
        got = _reserve(self.run(self.engine.reserve(acct, rid, bound, least=least)))
        assert got == self.model.reserve(acct, rid, bound, self.now, least)

    @rule(
        acct=accounts, rid=request_ids, cost=st.integers(1, 3), kid=key_ids, path=paths,
        least=st.none() | st.integers(1, 3),
    )  # fmt: skip
    def reserve_by_key(
        self, acct: str, rid: str, cost: int, kid: str, path: str, least: int | None
    ) -> None:
        """Through an API key with its own limits (or none), flat or metered."""
        rules = self.key_rules[kid]
        least = None if least is None else min(least, cost)
        route = "/" + path.split("/")[1]
        reserved = self.engine.reserve(
            acct, rid, cost, least=least, key_id=kid, rules=rules, route=route, path=path
        )
        got = _reserve(self.run(reserved))
        want = self.model.reserve(acct, rid, cost, self.now, least, rules, route, path, kid)
        assert got == want

    @rule(limit=st.none() | st.integers(0, 7))
    def change_key_limit(self, limit: int | None) -> None:
        """An operator changes ``k-limit``'s credit limit (or takes it away) mid-period."""
        self.key_rules = _key_rules(limit)

    @rule(acct=accounts, calls=st.integers(2, 9))
    def reserve_burst(self, acct: str, calls: int) -> None:
        """Fresh request ids at one instant: runs into the rate limit or the credits."""
        for _ in range(calls):
            self.fresh += 1
            self.reserve(acct, f"burst-{self.fresh}", 1)

    @rule(acct=accounts, pick=picks, tokens=st.integers(0, 5000))
    def settle(self, acct: str, pick: int, tokens: int) -> None:
        rid = self._rid(acct, pick)
        got = _settle(self.run(self.engine.settle(acct, rid, tokens)))
        assert got == self.model.settle(acct, rid, tokens, self.now)

    @rule(acct=accounts, pick=picks, tokens=st.integers(0, 30_000), charge=st.integers(0, 14))
    def settle_metered(self, acct: str, pick: int, tokens: int, charge: int) -> None:
        """A metered settle: part of the hold charged (or more than it: capped), the rest back."""
        rid = self._rid(acct, pick)
        got = _settle(self.run(self.engine.settle(acct, rid, tokens, charge=charge)))
        assert got == self.model.settle(acct, rid, tokens, self.now, charge)

    @rule(acct=accounts, pick=picks)
    def refund(self, acct: str, pick: int) -> None:
        rid = self._rid(acct, pick)
        got = _settle(self.run(self.engine.refund(acct, rid, reason="failed")))
        assert got == self.model.refund(acct, rid, "failed", self.now)

    @rule(acct=accounts, credits=st.integers(1, 4), rid=operation_ids)
    def grant(self, acct: str, credits: int, rid: str) -> None:
        got = _change(self.run(self.engine.grant(acct, credits, reason="gift", request_id=rid)))
        assert got == self.model.grant(acct, credits, "gift", rid, self.now)

    @rule(acct=accounts, tier=st.sampled_from(["pro", "mini", "free", "gold"]), months=months)
    def upgrade(self, acct: str, tier: str, months: int) -> None:
        got = _change(self.run(self.engine.set_tier(acct, "upgrade", tier=tier, months=months)))
        assert got == self.model.set_tier(acct, "upgrade", tier, months, "", self.now)

    @rule(acct=accounts, months=months, rid=operation_ids)
    def renew(self, acct: str, months: int, rid: str) -> None:
        renewed = self.engine.set_tier(acct, "renew", months=months, request_id=rid)
        got = _change(self.run(renewed))
        assert got == self.model.set_tier(acct, "renew", "", months, "", self.now, rid)

    @rule(acct=accounts)
    def downgrade(self, acct: str) -> None:
        got = _change(self.run(self.engine.set_tier(acct, "downgrade", reason="cancel")))
        assert got == self.model.set_tier(acct, "downgrade", "", 0, "cancel", self.now)

    @rule(acct=accounts)
    def status(self, acct: str) -> None:
        state = self.run(self.engine.status(acct))
        assert (None if state is None else view_of(state)) == self.model.status(acct, self.now)

    # -- the clock -------------------------------------------------------------------------------

    @rule(ms=st.integers(0, 20_000))
    def seconds_pass(self, ms: int) -> None:
        self.clock.now_ms += ms

    @rule(ms=st.integers(0, 45 * DAY_MS))
    def days_pass(self, ms: int) -> None:
        self.clock.now_ms += ms

    @rule(acct=accounts, which=st.sampled_from(["pe", "se"]), offset=st.sampled_from([-1, 0, 1]))
    def jump_to_an_end(self, acct: str, which: str, offset: int) -> None:
        """Onto (or a ms either side of) a period end or subscription end still ahead."""
        a = self.model.accounts.get(acct)
        target = 0 if a is None else (a.pe if which == "pe" else a.se) + offset
        if target > self.now:
            self.clock.now_ms = target

    @rule(acct=accounts, extra=st.integers(0, 70 * DAY_MS))
    def long_absence(self, acct: str, extra: int) -> None:
        """Past a subscription end still ahead, and on: period ends fall either side of it."""
        a = self.model.accounts.get(acct)
        if a is not None and a.se > self.now:
            self.clock.now_ms = a.se + extra

    # -- after every step ------------------------------------------------------------------------

    @invariant()
    def outbox_matches(self) -> None:
        for acct in ACCOUNTS:
            events = self.run(outbox_events(self.redis, acct))
            assert events == self.model.events.get(acct, [])

    @invariant()
    def key_spend_matches(self) -> None:
        """Each key's spend and the period it counts in, as Redis keeps them for the script."""
        for acct in ACCOUNTS:
            fields = self.run(self.redis.hgetall(keys.account_keys(acct).key_limits))
            found = {
                name[:-2]: (int(value), int(fields[name[:-2] + "|p"]))
                for name, value in fields.items()
                if name.endswith("|s")
            }
            want = {
                kid: (ks.spent, ks.period)
                for (a, kid), ks in self.model.keys.items()
                if a == acct and ks.period
            }
            assert found == want

    @invariant()
    def overdue_matches(self) -> None:
        found: set[tuple[str, str]] = set()
        for bucket in {keys.bucket_of(a) for a in ACCOUNTS}:
            found |= set(self.run(self.engine.overdue(bucket)))
        assert {f for f in found if f[0] in ACCOUNTS} == self.model.overdue(set(ACCOUNTS), self.now)


def test_engine_matches_the_model_on_redis(redis_url: str) -> None:
    machine = type("OnRedis", (EngineMachine,), {"redis_url": redis_url})
    run_state_machine_as_test(machine, settings=BUDGET)


def test_engine_matches_the_model_on_a_cluster(cluster_ports: list[int]) -> None:
    machine = type("OnCluster", (EngineMachine,), {"cluster_port": cluster_ports[0]})
    run_state_machine_as_test(machine, settings=BUDGET)


def test_engine_matches_the_model_on_fakeredis() -> None:
    run_state_machine_as_test(EngineMachine, settings=BUDGET)
