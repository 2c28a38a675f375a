"""What the credit scripts answer, as typed values. Credits and tokens are integers; times are
milliseconds since the epoch, read from the scripts' clock (Redis ``TIME`` unless overridden)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ReserveStatus = Literal["ok", "duplicate", "insufficient", "rate_limited", "missing"]
SettleStatus = Literal[
    "charged", "refunded", "charged_before", "refunded_before", "unknown", "missing"
]
TierStatus = Literal[
    "upgraded", "renewed", "downgraded", "not_subscribed", "missing", "unknown_tier"
]
ReservationState = Literal["held", "charged", "refunded", ""]


@dataclass(frozen=True, slots=True)
class AccountState:
    """An account as Redis holds it, after any due expiry and monthly rollover."""

    account: str
    plan_credits: int
    bonus_credits: int
    tier: str
    subscribed: bool
    subscription_ends_ms: int | None
    period_end_ms: int
    total_tokens: int
    monthly_tokens: int
    version: int
    allowance: int
    """Plan credits the tier refills to each period."""
    requests_per_minute: int
    """0: no rate limit."""
    now_ms: int
    """The scripts' clock when this was read."""

    @property
    def credits_remaining(self) -> int:
        return self.plan_credits + self.bonus_credits

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

    @property
    def held(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class Settlement:
    """The answer to ``settle`` or ``refund``."""

    status: SettleStatus
    account: AccountState | None
    credits: int
    """settle: the reservation's cost; refund: the credits given back (0 unless ``refunded``)."""


@dataclass(frozen=True, slots=True)
class TierChange:
    """The answer to ``set_tier``, ``grant`` and ``open``; ``account`` is None when missing."""

    status: str
    account: AccountState | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An account as the store of record last saw it: what ``restore`` loads into Redis."""

    plan_credits: int
    bonus_credits: int
    tier: str
    subscribed: bool
    subscription_ends_ms: int | None
    period_end_ms: int
    total_tokens: int
    monthly_tokens: int
    version: int
