"""The credit engine: one typed function per Lua script, and the only caller of the scripts.

Every function is one atomic script run on the keys of one account (one Redis Cluster slot).
Every change of balance or tier appends an event to the account's bucket outbox in the same
script, for the sync worker to copy to the store of record; but a reserve, whose settle or
refund emits the request's one event. Time is the scripts' clock: Redis ``TIME``, unless the
engine was given a ``clock`` (tests move it). Each call is timed for the ``observer``, when one
was handed in (the app hands its metrics'), so this package needs no metrics of its own.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

from gateway.credits import keys
from gateway.credits.batching import ScriptBatcher
from gateway.credits.client import RedisClient, ScriptArg
from gateway.credits.failures import unavailable
from gateway.credits.results import (
    AccountState,
    Reservation,
    ReservationState,
    ReserveStatus,
    Settlement,
    SettleStatus,
    Snapshot,
    TierChange,
    reply_text,
    snapshot_args,
    snapshot_values,
)
from gateway.credits.scopes import KeyRules
from gateway.credits.scripts import ScriptName, Scripts
from gateway.credits.wire import Wire
from gateway.settings import Tier

Clock = Callable[[], int]
"""Milliseconds since the epoch."""

ScriptObserver = Callable[[ScriptName, float, bool], None]
"""Told of each script call that ended: the script, the seconds from the call to its answer
(a deferred settle's wait for company included) and whether it answered (False: Redis or the
client failed, the caller got ``Unavailable``). A cancelled call is not reported."""

TierAction = Literal["upgrade", "renew", "downgrade"]

PERIOD_MS = 2_592_000_000
"""One monthly period and one subscription month, as the scripts count them (``MONTH_MS`` in
common.lua)."""

KEY_FIELDS = ("s", "p", "l", "n", "r")
"""A key's fields in its account's key hash, after ``<key id>|`` (common.lua)."""

DEFAULT_HOLD_MS = 360_000
DEFAULT_RETAIN_MS = 60_000
IDEMPOTENCY_RETAIN_MS = 86_400_000


def tiers_spec(tiers: Mapping[str, Tier]) -> str:
    """The tiers as the scripts read them: ``name=credits/rpm;...``."""
    for name in tiers:
        if any(c in name for c in "=;/"):
            raise ValueError(f"tier name {name!r} may not contain = ; or /")
    return ";".join(f"{n}={t.credits}/{t.requests_per_minute}" for n, t in tiers.items())


class CreditEngine:
    """Reserve, settle, refund, grant, change tiers, read and restore accounts in Redis."""

    def __init__(
        self,
        redis: RedisClient,
        tiers: Mapping[str, Tier],
        *,
        clock: Clock | None = None,
        hold_ms: int = DEFAULT_HOLD_MS,
        retain_ms: int = DEFAULT_RETAIN_MS,
        batch: bool = False,
        wire: Wire | None = None,
    ) -> None:
        """``batch``: send the script calls of one loop turn as one pipeline (a plain Redis
        client only, not a cluster); answers are the same, fewer round trips under load.
        ``wire``: the batches' own connection to that same Redis (implies ``batch``)."""
        if "free" not in tiers:
            raise ValueError("the tiers must include 'free': expiry and downgrade go to it")
        self.redis = redis
        self.tiers = dict(tiers)
        self._spec = tiers_spec(tiers)
        self._scripts = Scripts.register(redis)
        self._clock = clock
        self._batcher = ScriptBatcher(redis, wire) if batch or wire else None
        self._wire = wire
        self.observer: ScriptObserver | None = None
        self.hold_ms = hold_ms
        self.retain_ms = retain_ms

    async def aclose(self) -> None:
        """Close the engine's own connection, if it has one (the Redis client is the
        caller's)."""
        if self._wire is not None:
            await self._wire.aclose()

    def _now(self) -> str:
        return "" if self._clock is None else str(self._clock())

    async def _run(
        self,
        name: ScriptName,
        keys_: Sequence[str],
        args: Sequence[ScriptArg],
        *,
        defer: bool = False,
    ) -> Any:
        script = self._scripts.named(name)
        answered: bool | None = None
        started = time.perf_counter()
        try:
            if self._batcher is not None:
                reply = await self._batcher.call(script, keys_, args, defer=defer)
            else:
                reply = await script(keys=keys_, args=args)
            answered = True
            return reply
        except Exception as exc:
            # Whatever failed, Redis or the client (``failures``): the script may or may not
            # have run, and the caller must see the same Unavailable.
            answered = False
            raise unavailable(exc) from exc
        finally:
            if answered is not None and self.observer is not None:
                self.observer(name, time.perf_counter() - started, answered)

    async def reserve(
        self,
        account: str,
        request_id: str,
        cost: int,
        *,
        retain_ms: int | None = None,
        least: int | None = None,
        key_id: str = "",
        rules: KeyRules | None = None,
        route: str = "",
        path: str = "",
    ) -> Reservation:
        """Hold ``cost`` credits for one request, or refuse for credits or rate, all or nothing.

        ``least`` (a metered request): ``cost`` is an upper bound, and an account holding
        less but at least ``least`` credits has all it holds held instead (``hold``).

        ``key_id`` and ``route`` (its prefix) are kept with the reservation for the ledger
        event of its settle or refund. ``rules``: the key's own limits, checked with the
        account's (``path`` against its routes), all or nothing.

        Applies a due expiry and monthly rollover first. Idempotent per request id: a repeat
        answers ``duplicate`` with the first reservation's state and holds nothing more, for
        as long as the request id is remembered once settled: ``retain_ms`` given here binds
        every later settle or refund of it (the reaper's too); else theirs applies.
        """
        if cost < 1 or (least is not None and not 1 <= least <= cost):
            raise ValueError("cost must be at least 1 credit, and least from 1 to cost")
        k = keys.account_keys(account)
        raw = await self._run(
            "reserve",
            (k.state, k.reservation(request_id), k.deadlines, k.outbox, k.key_limits),
            _trimmed(
                account,
                request_id,
                cost,
                self._spec,
                self.hold_ms,
                key_id,
                route,
                self._now(),
                retain_ms or "",
                "" if least is None else least,
                *_rules_args(rules, path),
            ),
        )
        status = cast(ReserveStatus, reply_text(raw[0]))
        if status == "missing":
            return Reservation("missing", None, None, 0, "")
        return Reservation(
            status=status,
            account=_account(account, raw),
            rate_remaining=_limit(raw[13]),
            rate_wait_ms=int(raw[14]),
            state=cast(ReservationState, reply_text(raw[15])),
            hold=int(raw[16]),
            key_credit_limit=None if rules is None else rules.credit_limit,
            key_requests_per_minute=None if rules is None else rules.requests_per_minute,
            key_credits_left=_limit(raw[17]),
            key_rate_remaining=_limit(raw[18]),
            key_rate_wait_ms=int(raw[19]),
        )

    async def settle(
        self,
        account: str,
        request_id: str,
        tokens: int,
        *,
        retain_ms: int | None = None,
        defer: bool = False,
        charge: int | None = None,
        brief: bool = False,
    ) -> Settlement:
        """Charge a held reservation and add ``tokens`` to the lifetime and monthly totals.

        ``charge`` (a metered request): charge that many credits of the hold, never more than
        it, and give the rest back in the same script; None charges the whole hold.

        Idempotent: settling a reservation that is unknown or already settled changes nothing
        and says so in the status. ``defer``: nobody is waiting on the answer, so when batched
        it may wait a moment to share the next call's round trip (``batching.DEFER_S``).
        ``brief``: the settlement without its ``account`` (None), for a caller that does not
        read it: Redis does less.
        """
        settle_keys, args = self._settle_call(account, request_id, tokens, retain_ms, charge, brief)
        raw = await self._run("settle", settle_keys, args, defer=defer)
        return _settlement(account, raw)

    def _settle_call(
        self,
        account: str,
        request_id: str,
        tokens: int,
        retain_ms: int | None,
        charge: int | None,
        brief: bool,
    ) -> tuple[tuple[str, ...], tuple[ScriptArg, ...]]:
        """The settle script's keys and arguments (``brief``: answer without the account)."""
        if tokens < 0 or (charge is not None and charge < 0):
            raise ValueError("tokens and charge cannot be negative")
        k = keys.account_keys(account)
        return (k.state, k.reservation(request_id), k.deadlines, k.outbox, k.key_limits), _trimmed(
            account,
            request_id,
            tokens,
            self._spec,
            retain_ms or self.retain_ms,
            1 if brief else "",
            "" if charge is None else charge,
            self._now(),
        )

    def settle_soon(
        self, account: str, request_id: str, tokens: int, charge: int | None = None
    ) -> asyncio.Future[Settlement]:
        """``settle``, for a caller that does not wait on it (the proxy, its answer sent).

        Batched, the call is deferred to share the next call's round trip and its outcome is
        a future rather than a coroutine: no task is made for it. It fails with
        ``Unavailable`` as ``settle`` does. Its settlement has no ``account``: the script
        answers without describing it, which was a tenth of its cost in Redis.
        """
        if self._batcher is None:
            return asyncio.ensure_future(
                self.settle(account, request_id, tokens, charge=charge, brief=True)
            )
        settle_keys, args = self._settle_call(account, request_id, tokens, None, charge, True)
        raw = self._batcher.call(self._scripts.settle, settle_keys, args, defer=True)
        if self.observer is not None:
            raw.add_done_callback(
                functools.partial(_report, self.observer, "settle", time.perf_counter())
            )
        settled: asyncio.Future[Settlement] = raw.get_loop().create_future()
        raw.add_done_callback(functools.partial(_settled, account, settled))
        return settled

    async def refund(
        self, account: str, request_id: str, *, reason: str, retain_ms: int | None = None
    ) -> Settlement:
        """Give a held reservation back in full (plan credits up to the tier's allowance).

        Idempotent like ``settle``; the reaper and the proxy may race, only one refunds.
        """
        k = keys.account_keys(account)
        raw = await self._run(
            "refund",
            (k.state, k.reservation(request_id), k.deadlines, k.outbox, k.key_limits),
            (account, request_id, reason, self._now(), self._spec, retain_ms or self.retain_ms),
        )
        return _settlement(account, raw)

    async def extend(self, account: str, request_id: str) -> bool:
        """Move a held reservation's deadline to ``hold_ms`` from now (a long answer is still
        streaming); False when it is no longer held. Idempotent."""
        k = keys.account_keys(account)
        raw = await self._run(
            "extend",
            (k.reservation(request_id), k.deadlines),
            (account, request_id, self._now(), self.hold_ms),
        )
        return int(raw) == 1

    async def open(
        self,
        account: str,
        *,
        tier: str = "free",
        months: int = 0,
        reason: str = "",
        request_id: str = "",
    ) -> TierChange:
        """Create an account holding its tier's credits; ``exists`` if Redis has it already.

        A paid tier with ``months=0`` is subscribed with no end.
        """
        if months < 0:
            raise ValueError("months cannot be negative")
        k = keys.account_keys(account)
        raw = await self._run(
            "open",
            (k.state, k.outbox),
            (account, tier, months, self._now(), self._spec, reason, request_id),
        )
        return _change(account, raw)

    async def grant(
        self, account: str, credits: int, *, reason: str, request_id: str = ""
    ) -> TierChange:
        """Add bonus credits: they survive monthly resets and tier changes.

        Applied once per ``request_id`` (for a day): a replay of it answers ``granted`` with
        nothing added, so a retried call cannot grant twice.
        """
        if credits < 1:
            raise ValueError("a grant is at least 1 credit")
        k = keys.account_keys(account)
        raw = await self._run(
            "grant",
            (k.state, k.outbox, k.operation(request_id)),
            (account, credits, reason, request_id, self._now(), self._spec),
        )
        return _change(account, raw)

    async def set_tier(
        self,
        account: str,
        action: TierAction,
        *,
        tier: str = "",
        months: int = 0,
        reason: str = "",
        request_id: str = "",
    ) -> TierChange:
        """Upgrade (to ``tier`` for ``months``), renew (by ``months``) or downgrade to free.

        Applied once per ``request_id``, as ``grant`` is: a replay changes nothing.
        """
        if action != "downgrade" and months < 1:
            raise ValueError("months must be at least 1")
        k = keys.account_keys(account)
        raw = await self._run(
            "set_tier",
            (k.state, k.outbox, k.operation(request_id)),
            (account, action, tier, months, reason, self._now(), self._spec, request_id),
        )
        return _change(account, raw)

    async def status(self, account: str) -> AccountState | None:
        """The account after a due expiry and rollover; None when Redis does not have it."""
        k = keys.account_keys(account)
        raw = await self._run("status", (k.state, k.outbox), (account, self._now(), self._spec))
        return None if reply_text(raw[0]) == "missing" else _account(account, raw)

    async def restore(self, account: str, snapshot: Snapshot) -> TierChange:
        """Load an account from the store, only if Redis lacks it (``restored`` or ``exists``).

        The store counts credits held by open reservations as the account's: those still held
        in Redis are taken out of the snapshot's balance again."""
        k = keys.account_keys(account)
        raw = await self._run(
            "restore",
            (k.state, k.outbox, k.deadlines),
            (account, self._now(), self._spec, *snapshot_args(snapshot), k.reservation("")),
        )
        return _change(account, raw)

    async def seed_key_spend(
        self, account: str, period_end_ms: int, spent: Mapping[str, int]
    ) -> str:
        """Raise what keys have spent in the period ending at ``period_end_ms`` to what the
        store says they spent in it (``seed_keys.lua``): 'seeded', 'moved' (the account is in
        another period now: nothing changes) or 'missing'."""
        if any(credits < 0 for credits in spent.values()):
            raise ValueError("a key cannot have spent less than nothing")
        k = keys.account_keys(account)
        pairs = [value for key_id, credits in spent.items() for value in (key_id, credits)]
        raw = await self._run("seed_keys", (k.state, k.key_limits), (period_end_ms, *pairs))
        return reply_text(raw)

    async def forget_key(self, account: str, key_id: str) -> None:
        """Drop a revoked key's spend and rate from its account's key hash: nothing will read
        them again (a revoked key stays revoked)."""
        fields = [f"{key_id}|{part}" for part in KEY_FIELDS]
        try:
            await self.redis.hdel(keys.account_keys(account).key_limits, *fields)
        except Exception as exc:
            raise unavailable(exc) from exc

    async def key_spend(self, account: str, key_ids: Sequence[str]) -> dict[str, int]:
        """What each of these keys has spent (held or charged) in the account's current
        period, as its credit limit counts it: only while the key has a credit limit (0 for
        one that never had one). Read after a due rollover, like ``status``."""
        state = await self.status(account)
        if state is None or not key_ids:
            return dict.fromkeys(key_ids, 0)
        try:  # a few fields per key of one account: read whole
            raw = await self.redis.hgetall(keys.account_keys(account).key_limits)
        except Exception as exc:
            raise unavailable(exc) from exc
        found = {reply_text(name): reply_text(value) for name, value in raw.items()}
        spent: dict[str, int] = {}
        for key_id in key_ids:
            current = found.get(f"{key_id}|p") == str(state.period_end_ms)
            spent[key_id] = int(found.get(f"{key_id}|s", "0")) if current else 0
        return spent

    async def now_ms(self) -> int:
        """The scripts' clock: the injected one, else Redis ``TIME`` (ms since the epoch)."""
        if self._clock is not None:
            return self._clock()
        try:
            seconds, micros = await self.redis.time()
        except Exception as exc:
            raise unavailable(exc) from exc
        return int(seconds) * 1000 + int(micros) // 1000

    async def overdue(self, bucket: int, *, limit: int = 100) -> list[tuple[str, str]]:
        """Reservations of a bucket past their deadline, as (account, request id), oldest first.

        For the reaper: found through the bucket's deadline index, never by scanning keys.
        """
        now = await self.now_ms()
        try:
            members = await self.redis.zrangebyscore(
                keys.deadlines(bucket), "-inf", now, start=0, num=limit
            )
        except Exception as exc:
            raise unavailable(exc) from exc
        found = []
        for member in members:
            account, _, request_id = reply_text(member).partition("|")
            found.append((account, request_id))
        return found


def _limit(value: object) -> int | None:
    """A script's figure of a limit, where -1 says there is no such limit."""
    number = int(cast(int, value))
    return None if number < 0 else number


def _trimmed(*args: ScriptArg) -> tuple[ScriptArg, ...]:
    """A script's arguments without the ''s at their end, which the scripts read as left out:
    every argument costs Redis a little on every call."""
    end = len(args)
    while end and args[end - 1] == "":
        end -= 1
    return args[:end]


def _rules_args(rules: KeyRules | None, path: str) -> tuple[ScriptArg, ...]:
    """A key's own limits as the reserve script reads them (ARGV[11] to ARGV[15]); none at
    all when the key has none (the script reads a missing one as '')."""
    if rules is None:
        return ()
    return (
        "" if rules.credit_limit is None else rules.credit_limit,
        rules.requests_per_minute or "",
        "" if rules.expires_at_ms is None else rules.expires_at_ms,
        path if rules.routes is not None else "",
        # no prefix at all allows nothing: a lone newline holds none
        ("\n".join(rules.routes) or "\n") if rules.routes is not None else "",
    )


def _account(account: str, raw: list[Any]) -> AccountState:
    # describe() in common.lua: status, the snapshot's fields, allowance, rpm, now; positional,
    # as AccountState extends Snapshot: it is built on every proxied request.
    values = snapshot_values(raw[1:10])
    values += (account, int(raw[10]), int(raw[11]), int(raw[12]))
    return AccountState(*values)


def _settlement(account: str, raw: list[Any]) -> Settlement:
    status = cast(SettleStatus, reply_text(raw[0]))
    if status in ("unknown", "missing"):
        return Settlement(status, None, 0)
    if len(raw) == 3:  # a brief settle's: no account
        return Settlement(status, None, int(raw[1]), int(raw[2]))
    returned = int(raw[14]) if len(raw) > 14 else 0  # refund answers have no [15]
    return Settlement(status, _account(account, raw), int(raw[13]), returned)


def _settled(account: str, settled: asyncio.Future[Settlement], raw: asyncio.Future[Any]) -> None:
    if raw.cancelled():
        settled.cancel()
        return
    error = raw.exception()
    if error is None:
        try:
            settled.set_result(_settlement(account, raw.result()))
            return
        except (ValueError, IndexError, TypeError) as exc:  # not a reply the script gives
            error = exc
    settled.set_exception(unavailable(error))


def _report(
    observer: ScriptObserver, name: ScriptName, started: float, raw: asyncio.Future[Any]
) -> None:
    """``_run``'s report to the observer, for a call whose reply is a future."""
    if not raw.cancelled():
        observer(name, time.perf_counter() - started, raw.exception() is None)


def _change(account: str, raw: list[Any]) -> TierChange:
    status = reply_text(raw[0])
    if len(raw) == 1:
        return TierChange(status, None)
    return TierChange(status, _account(account, raw))
