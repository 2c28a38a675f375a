"""What the credit scripts answer, as typed values, and how an account's fields are written in
Redis. Credits and tokens are integers; times are milliseconds since the epoch, read from the
scripts' clock (Redis ``TIME`` unless overridden)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

ReserveStatus = Literal[
    "ok",
    "duplicate",
    "insufficient",
    "rate_limited",
    "missing",
    "key_credit_limit",
    "key_rate_limited",
    "key_expired",
    "route_not_allowed",
]
SettleStatus = Literal[
    "charged", "refunded", "charged_before", "refunded_before", "unknown", "missing"
]
TierStatus = Literal[
    "upgraded", "renewed", "downgraded", "not_subscribed", "missing", "unknown_tier"
]
ReservationState = Literal["held", "charged", "refunded", ""]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An account's own fields: its state in Redis (``load`` in common.lua), what every
    outbox event carries after its change, and what ``restore`` loads from the store of record.

    The one list of them on the Redis side: ``AccountState`` extends it, and ``IN_HASH``
    maps each field to its name in the hash.
    """

    plan_credits: int
    bonus_credits: int
    tier: str
    subscribed: bool
    subscription_ends_ms: int | None
    period_end_ms: int
    total_tokens: int
    monthly_tokens: int
    version: int

    @property
    def credits_remaining(self) -> int:
        return self.plan_credits + self.bonus_credits


@dataclass(frozen=True, slots=True)
class AccountState(Snapshot):
    """An account as Redis holds it, after any due expiry and monthly rollover: its snapshot
    and what the scripts read with it."""

    account: str
    allowance: int
    """Plan credits the tier refills to each period."""
    requests_per_minute: int
    """0: no rate limit."""
    now_ms: int
    """The scripts' clock when this was read."""

    @property
    def ms_to_period_end(self) -> int:
        return max(0, self.period_end_ms - self.now_ms)


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer to ``reserve``: only status ``ok`` holds credits."""

    status: ReserveStatus
    account: AccountState | None
    """None only when the status is ``missing`` (Redis does not have the account)."""
    rate_remaining: int | None
    """Calls left in the rate quota now; None when the tier has no rate limit."""
    rate_wait_ms: int
    """rate_limited: ms until a call would pass; otherwise ms until the quota is full again."""
    state: ReservationState
    """For ``duplicate``: what became of the first reservation of this request id."""
    hold: int = 0
    """The credits held (``ok``): the cost, or for a metered request its upper bound or,
    when the account (or its key's limit) allowed less, all it allowed (at least the request's
    least)."""
    key_credit_limit: int | None = None
    """The key's own credit limit per period (``KeyRules``); None: none."""
    key_requests_per_minute: int | None = None
    """The key's own rate limit; None: none."""
    key_credits_left: int | None = None
    """Credits the key may still spend this period (after this hold); None: no key limit."""
    key_rate_remaining: int | None = None
    """Calls left in the key's own rate quota; None when the key has no rate limit."""
    key_rate_wait_ms: int = 0
    """key_rate_limited: ms until the key's next call would pass; otherwise until its quota is
    full again."""

    @property
    def held(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class Settlement:
    """The answer to ``settle`` or ``refund``."""

    status: SettleStatus
    account: AccountState | None
    """None when the status is ``unknown`` or ``missing``, and for a brief settle
    (``settle_soon``, the proxy's, which does not read it)."""
    credits: int
    """settle: the credits charged (the hold, or a metered request's part of it); refund: the
    credits given back (0 unless ``refunded``)."""
    returned: int = 0
    """settle: the part of a metered hold given back by this settle (0 for a repeat)."""


@dataclass(frozen=True, slots=True)
class TierChange:
    """The answer to ``set_tier``, ``grant`` and ``open``; ``account`` is None when missing."""

    status: str
    account: AccountState | None


def reply_text(value: object) -> str:
    """A value Redis gave back as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _flag(value: Any) -> bool:
    return int(value) == 1


def _time_or_none(value: Any) -> int | None:
    return int(value) or None


IN_HASH: Mapping[str, tuple[str, Callable[[Any], Any]]] = {
    "plan_credits": ("plan", int),
    "bonus_credits": ("bonus", int),
    "tier": ("tier", reply_text),
    "subscribed": ("sub", _flag),  # 1 or 0
    "subscription_ends_ms": ("se", _time_or_none),  # 0: no end
    "period_end_ms": ("pe", int),
    "total_tokens": ("tt", int),
    "monthly_tokens": ("mt", int),
    "version": ("v", int),
}
"""Each ``Snapshot`` field, in its order: its name in the account's state and outbox events
(common.lua), and how a value Redis gives back reads. Scripts answer the fields in this
order (``describe``) and ``restore`` takes them in it."""

SNAPSHOT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Snapshot))
HASH_FIELDS: tuple[str, ...] = tuple(name for name, _ in IN_HASH.values())
_READERS = tuple(read for _, read in IN_HASH.values())


def snapshot_values(raw: Sequence[object]) -> list[Any]:
    """The fields of a snapshot, in its order, from the nine values Redis gives in hash order
    (a script's answer, ``HMGET`` of ``HASH_FIELDS``): ``Snapshot(*values)``."""
    return [read(value) for read, value in zip(_READERS, raw, strict=True)]


def snapshot_fields(hash_fields: Mapping[str, object]) -> dict[str, Any]:
    """The fields of a snapshot by name, from a mapping keyed by the hash's names (an outbox
    event's fields). KeyError when one is missing."""
    return {name: read(hash_fields[key]) for name, (key, read) in IN_HASH.items()}


def snapshot_args(snapshot: Snapshot) -> list[int | str]:
    """A snapshot's fields as the hash holds them, in its order (``restore``'s arguments)."""
    return [_in_hash(getattr(snapshot, name)) for name in SNAPSHOT_FIELDS]


def _in_hash(value: int | str | None) -> int | str:
    """A flag as 1 or 0, no time as 0 (the scripts' hash holds numbers and strings only)."""
    if value is None:
        return 0
    return int(value) if isinstance(value, bool) else value
