"""A plain-Python model of the credit rules, to hold the Lua engine against.

Written from the rules (CONTRACT.md "The credit rules" and the design decisions in the .lua
headers), not from the scripts: integers and a millisecond clock, the rate limiter's
theoretical arrival time as an exact ``Fraction``. Every method takes ``now`` and answers what
the engine answers; every change appends the event the engine appends to the outbox.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Protocol

from gateway.credits import keys
from gateway.credits.outboxes import event_fields
from gateway.credits.results import AccountState
from gateway.credits.scopes import KeyRules
from gateway.settings import Tier

MONTH_MS = 30 * 24 * 3600 * 1000


"""The reason of the refund event a metered settle gives the unused hold back with."""


@dataclass
class Account:
    plan: int
    bonus: int
    tier: str
    sub: int
    se: int
    pe: int
    tt: int = 0
    mt: int = 0
    v: int = 0
    hp: int = 0
    """Plan credits held by open reservations (out of ``plan``, still the account's in the
    ledger: events count them in)."""
    hb: int = 0
    tat: Fraction = Fraction(0)
    """GCRA theoretical arrival time, ms."""
    tat_rpm: int = 0
    """The rpm ``tat`` was last advanced under: another rpm rounds it up to a whole ms."""


@dataclass(frozen=True)
class Event:
    """One outbox event: what moved, and the account's state after it (its plan and bonus
    credits as the ledger counts them: held ones included); ``rp`` / ``rb``: what the settled
    or refunded request held."""

    kind: str
    dp: int
    db: int
    tok: int
    rid: str
    note: str
    ts: int
    v: int
    plan: int
    bonus: int
    tier: str
    sub: int
    se: int
    pe: int
    tt: int
    mt: int
    rp: int = 0
    rb: int = 0
    key: str = ""
    route: str = ""


@dataclass
class Held:
    state: str
    cost: int
    from_plan: int
    from_bonus: int
    deadline: int
    charged: int = 0
    key: str = ""
    route: str = ""
    counted: int = 0
    """Credits counted against the key's credit limit (0: the key had none)."""
    period: int = 0
    """The period end they counted in."""


@dataclass
class KeyState:
    """A key's own spend and rate, kept next to its account's."""

    spent: int = 0
    period: int = 0
    """The account's period end the spend counts in (another: nothing spent yet)."""
    tat: Fraction = Fraction(0)
    tat_rpm: int = 0


@dataclass(frozen=True)
class View:
    """An account as an answer describes it (the engine's AccountState, flat)."""

    plan: int
    bonus: int
    tier: str
    sub: int
    se: int
    pe: int
    tt: int
    mt: int
    v: int
    allowance: int
    rpm: int
    now: int


@dataclass(frozen=True)
class ReserveAnswer:
    status: str
    view: View | None
    rate_remaining: int | None
    rate_wait_ms: int
    state: str
    hold: int = 0
    key_left: int | None = None
    key_rate_remaining: int | None = None
    key_rate_wait_ms: int = 0


@dataclass(frozen=True)
class SettleAnswer:
    status: str
    view: View | None
    credits: int
    returned: int = 0


@dataclass(frozen=True)
class ChangeAnswer:
    status: str
    view: View | None


@dataclass
class CreditModel:
    """The rules over any number of accounts, each with its reservations and event list."""

    tiers: Mapping[str, Tier]
    hold_ms: int = 360_000
    accounts: dict[str, Account] = field(default_factory=dict)
    held: dict[tuple[str, str], Held] = field(default_factory=dict)
    operations: set[tuple[str, str]] = field(default_factory=set)
    """(account, request id) of the grants and tier changes applied: a replay is a no-op."""
    events: dict[str, list[Event]] = field(default_factory=dict)
    keys: dict[tuple[str, str], KeyState] = field(default_factory=dict)
    """(account, key id) -> the key's own spend and rate, for keys with limits."""

    # -- the rules' building blocks -----------------------------------------------------------

    def _rules(self, tier: str) -> Tier:
        return self.tiers.get(tier) or self.tiers["free"]

    def _view(self, a: Account, now: int) -> View:
        r = self._rules(a.tier)
        return View(
            a.plan, a.bonus, a.tier, a.sub, a.se, a.pe, a.tt, a.mt, a.v,
            r.credits, r.requests_per_minute, now,
        )  # fmt: skip

    def _emit(
        self, acct: str, a: Account, now: int, kind: str, dp: int, db: int = 0,
        tok: int = 0, rid: str = "", note: str = "", rp: int = 0, rb: int = 0,
        key: str = "", route: str = "",
    ) -> None:  # fmt: skip
        a.v = max(a.v + 1, now * 1000)  # the scripts' clock in us
        self.events.setdefault(acct, []).append(
            Event(
                kind,
                dp,
                db,
                tok,
                rid,
                note,
                now,
                a.v,
                a.plan + a.hp,
                a.bonus + a.hb,
                a.tier,
                a.sub,
                a.se,
                a.pe,
                a.tt,
                a.mt,
                rp,
                rb,
                key,
                route,
            )  # fmt: skip
        )

    def _expire(self, acct: str, a: Account, now: int) -> None:
        old = a.plan
        a.tier, a.sub, a.se = "free", 0, 0
        a.plan = min(a.plan, self.tiers["free"].credits)
        self._emit(acct, a, now, "expire", a.plan - old, note="subscription ended")

    def _reset(self, acct: str, a: Account, now: int, until: int) -> None:
        """The period ends at or before ``until``, as one event: refill and zero the month."""
        periods = (until - a.pe) // MONTH_MS + 1
        old = a.plan
        a.pe += periods * MONTH_MS
        a.plan = self._rules(a.tier).credits
        a.mt = 0
        self._emit(acct, a, now, "reset", a.plan - old, note="monthly period")

    def _due(self, acct: str, a: Account, now: int) -> None:
        """Expiry and period ends in the order they fell due; a tie: the expiry first."""
        if a.se > 0 and now >= a.se:
            if a.pe < a.se:
                self._reset(acct, a, now, a.se - 1)
            self._expire(acct, a, now)
        if now >= a.pe:
            self._reset(acct, a, now, now)

    def _debt(self, a: Account | KeyState, rpm: int, now: int) -> Fraction:
        """How far (ms) the theoretical arrival time is ahead of now."""
        if not rpm:
            return Fraction(0)
        tat = a.tat if a.tat_rpm == rpm else Fraction(math.ceil(a.tat))
        return max(Fraction(0), tat - now)

    # -- the operations -------------------------------------------------------------------------

    def open(self, acct: str, tier: str, months: int, now: int) -> ChangeAnswer:
        a = self.accounts.get(acct)
        if a is not None:
            return ChangeAnswer("exists", self._view(a, now))
        if tier not in self.tiers:
            return ChangeAnswer("unknown_tier", None)
        paid = tier != "free"
        a = Account(
            plan=self.tiers[tier].credits, bonus=0, tier=tier, sub=int(paid),
            se=now + months * MONTH_MS if paid and months > 0 else 0, pe=now + MONTH_MS,
        )  # fmt: skip
        self.accounts[acct] = a
        self._emit(acct, a, now, "open", a.plan)
        return ChangeAnswer("opened", self._view(a, now))

    def reserve(
        self,
        acct: str,
        rid: str,
        cost: int,
        now: int,
        least: int | None = None,
        key: KeyRules | None = None,
        route: str = "",
        path: str = "",
        key_id: str = "",
    ) -> ReserveAnswer:
        """``least`` (metered): ``cost`` is an upper bound; an account with less, but at least
        ``least``, has all it holds held (or all its key may still spend, when less). ``key``:
        the key's own limits, checked with the account's, all or nothing."""
        a = self.accounts.get(acct)
        if a is None:
            return ReserveAnswer("missing", None, None, 0, "")
        self._due(acct, a, now)
        rpm = self._rules(a.tier).requests_per_minute
        debt = self._debt(a, rpm, now)
        kid = key_id
        limit = None if key is None else key.credit_limit
        krpm = (key.requests_per_minute or 0) if key is not None else 0
        ks = KeyState()
        if key is not None and key.counted:
            ks = self.keys.setdefault((acct, kid), KeyState())
        spent = ks.spent if ks.period == a.pe else 0
        kdebt = self._debt(ks, krpm, now)

        def left(d: Fraction, per_minute: int) -> int | None:
            if not per_minute:
                return None
            return max(0, math.floor((60000 - d) * per_minute / 60000))

        def answer(
            status: str, state: str, hold: int = 0, wait: Fraction | None = None,
            kwait: Fraction | None = None,
        ) -> ReserveAnswer:  # fmt: skip
            return ReserveAnswer(
                status, self._view(a, now),
                0 if wait is not None else left(debt, rpm),
                math.ceil(debt if wait is None else wait), state, hold,
                None if limit is None else max(0, limit - spent),
                0 if kwait is not None else left(kdebt, krpm),
                math.ceil(kdebt if kwait is None else kwait),
            )  # fmt: skip

        if key is not None and key.expires_at_ms is not None and now >= key.expires_at_ms:
            return answer("key_expired", "")
        if key is not None and key.routes is not None and not _allowed(path, key.routes):
            return answer("route_not_allowed", "")
        prior = self.held.get((acct, rid))
        if prior is not None:
            return answer("duplicate", prior.state)
        can = a.plan + a.bonus
        if limit is not None:
            can = min(can, max(0, limit - spent))
        if least is not None and least <= can < cost:
            cost = can
        if a.plan + a.bonus < cost:
            return answer("insufficient", "")
        if limit is not None and limit - spent < cost:
            return answer("key_credit_limit", "")
        interval = Fraction(60000, rpm) if rpm else Fraction(0)
        if rpm and debt + interval > 60000:
            return answer("rate_limited", "", wait=debt + interval - 60000)
        kinterval = Fraction(60000, krpm) if krpm else Fraction(0)
        if krpm and kdebt + kinterval > 60000:
            return answer("key_rate_limited", "", kwait=kdebt + kinterval - 60000)
        from_plan = min(a.plan, cost)
        from_bonus = cost - from_plan
        a.plan -= from_plan
        a.bonus -= from_bonus
        if rpm:
            debt += interval
            a.tat, a.tat_rpm = now + debt, rpm
        a.hp += from_plan
        a.hb += from_bonus
        held = Held("held", cost, from_plan, from_bonus, now + self.hold_ms, key=kid, route=route)
        if limit is not None:
            spent += cost
            ks.spent, ks.period = spent, a.pe
            held.counted, held.period = cost, a.pe
        if krpm:
            kdebt += kinterval
            ks.tat, ks.tat_rpm = now + kdebt, krpm
        self.held[(acct, rid)] = held
        return answer("ok", "held", cost)  # no event: the settle has it

    def _unspend(self, acct: str, h: Held, credits: int) -> None:
        """Give credits of a closed hold back to its key's spend, in the period it counted."""
        ks = self.keys.get((acct, h.key))
        if h.counted and ks is not None and ks.period == h.period and credits > 0:
            ks.spent = max(0, ks.spent - credits)

    def settle(
        self, acct: str, rid: str, tokens: int, now: int, charge: int | None = None
    ) -> SettleAnswer:
        """``charge`` (metered): that much of the hold, the rest given back in the same event
        (bonus credits first, plan credits up to the allowance)."""
        a = self.accounts.get(acct)
        h = self.held.get((acct, rid))
        if a is None or h is None:
            return SettleAnswer("unknown", None, 0)
        if h.state != "held":
            credits = h.charged if h.state == "charged" else h.cost
            return SettleAnswer(f"{h.state}_before", self._view(a, now), credits)
        self._due(acct, a, now)
        h.state = "charged"
        h.charged = h.cost if charge is None else max(0, min(h.cost, charge))
        to_bonus = min(h.from_bonus, h.cost - h.charged)
        room = max(0, self._rules(a.tier).credits - a.plan)
        to_plan = min(h.cost - h.charged - to_bonus, room)
        a.plan += to_plan
        a.bonus += to_bonus
        a.tt += tokens
        a.mt += tokens
        a.hp -= h.from_plan
        a.hb -= h.from_bonus
        self._emit(
            acct, a, now, "charge", to_plan - h.from_plan, to_bonus - h.from_bonus, tokens, rid,
            rp=h.from_plan, rb=h.from_bonus, key=h.key, route=h.route,
        )  # fmt: skip
        self._unspend(acct, h, h.cost - h.charged)
        return SettleAnswer("charged", self._view(a, now), h.charged, to_plan + to_bonus)

    def refund(self, acct: str, rid: str, reason: str, now: int) -> SettleAnswer:
        a = self.accounts.get(acct)
        h = self.held.get((acct, rid))
        if a is None or h is None:
            return SettleAnswer("unknown", None, 0)
        if h.state != "held":
            return SettleAnswer(f"{h.state}_before", self._view(a, now), 0)
        self._due(acct, a, now)
        h.state = "refunded"
        to_plan = min(h.from_plan, max(0, self._rules(a.tier).credits - a.plan))
        a.plan += to_plan
        a.bonus += h.from_bonus
        a.hp -= h.from_plan
        a.hb -= h.from_bonus
        self._emit(
            acct, a, now, "refund", to_plan - h.from_plan, 0, rid=rid, note=reason,
            rp=h.from_plan, rb=h.from_bonus, key=h.key, route=h.route,
        )  # fmt: skip
        self._unspend(acct, h, h.counted)
        return SettleAnswer("refunded", self._view(a, now), to_plan + h.from_bonus)

    def grant(self, acct: str, credits: int, reason: str, rid: str, now: int) -> ChangeAnswer:
        a = self.accounts.get(acct)
        if a is None:
            return ChangeAnswer("missing", None)
        self._due(acct, a, now)
        if self._once(acct, rid):
            a.bonus += credits
            self._emit(acct, a, now, "grant", 0, credits, rid=rid, note=reason)
        return ChangeAnswer("granted", self._view(a, now))

    def _once(self, acct: str, rid: str) -> bool:
        """A request id applies an operation once; a replay of it changes nothing."""
        if not rid:
            return True
        if (acct, rid) in self.operations:
            return False
        self.operations.add((acct, rid))
        return True

    def set_tier(
        self, acct: str, action: str, tier: str, months: int, reason: str, now: int, rid: str = ""
    ) -> ChangeAnswer:
        a = self.accounts.get(acct)
        if a is None:
            return ChangeAnswer("missing", None)
        if action == "upgrade" and (tier not in self.tiers or tier == "free"):
            return ChangeAnswer("unknown_tier", None)
        self._due(acct, a, now)
        if action == "renew" and not a.sub:
            return ChangeAnswer("not_subscribed", self._view(a, now))
        done = {"upgrade": "upgraded", "renew": "renewed", "downgrade": "downgraded"}
        if not self._once(acct, rid):
            return ChangeAnswer(done[action], self._view(a, now))
        old = a.plan
        if action == "upgrade":
            a.tier, a.sub, a.se = tier, 1, now + months * MONTH_MS
            a.plan = self.tiers[tier].credits
            status = "upgraded"
        elif action == "renew":
            if a.se:
                a.se = max(now, a.se) + months * MONTH_MS
            status = "renewed"
        else:
            a.tier, a.sub, a.se = "free", 0, 0
            a.plan = min(a.plan, self.tiers["free"].credits)
            status = "downgraded"
        self._emit(acct, a, now, action, a.plan - old, rid=rid, note=reason)
        return ChangeAnswer(status, self._view(a, now))

    def status(self, acct: str, now: int) -> View | None:
        a = self.accounts.get(acct)
        if a is None:
            return None
        self._due(acct, a, now)
        return self._view(a, now)

    def overdue(self, accounts: set[str], now: int) -> set[tuple[str, str]]:
        """Held reservations of these accounts whose deadline has passed."""
        return {
            key
            for key, h in self.held.items()
            if key[0] in accounts and h.state == "held" and h.deadline <= now
        }

    def snapshot(self, acct: str) -> Account:
        return replace(self.accounts[acct])


def _allowed(path: str, prefixes: tuple[str, ...]) -> bool:
    """A path under one of a key's route prefixes (``/`` allows every path)."""
    return any(p == "/" or path == p or path.startswith(p + "/") for p in prefixes)


def view_of(s: AccountState) -> View:
    """The engine's answer in the model's terms."""
    return View(
        s.plan_credits, s.bonus_credits, s.tier, int(s.subscribed), s.subscription_ends_ms or 0,
        s.period_end_ms, s.total_tokens, s.monthly_tokens, s.version, s.allowance,
        s.requests_per_minute, s.now_ms,
    )  # fmt: skip


async def outbox_events(redis: Any, account: str) -> list[Event]:
    """The account's events in its bucket's outbox, oldest first."""
    entries = await redis.xrange(keys.account_keys(account).outbox)
    events = [event_fields(f) for _, f in entries]
    return [event_of(f) for f in events if f["acct"] == account]


def event_of(f: Mapping[str, str]) -> Event:
    n = {name: int(f[name]) for name in ("dp", "db", "tok", "ts", "v")}
    s = {name: int(f[name]) for name in ("plan", "bonus", "sub", "se", "pe", "tt", "mt")}
    return Event(
        f["kind"], n["dp"], n["db"], n["tok"], f["rid"], f["note"], n["ts"], n["v"],
        s["plan"], s["bonus"], f["tier"], s["sub"], s["se"], s["pe"], s["tt"], s["mt"],
        int(f.get("rp") or 0), int(f.get("rb") or 0), f.get("key", ""), f.get("route", ""),
    )  # fmt: skip


class MovableClock(Protocol):
    """The tests' ManualClock (tests/conftest.py), as the scenarios use it."""

    now_ms: int

    def __call__(self) -> int: ...

    def advance(self, ms: int) -> None: ...
