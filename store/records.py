"""The store's vocabulary in and out: plain frozen dataclasses, no SQL types.

Times come back as aware UTC datetimes (``*_at`` fields); the ``*_ms`` properties give the
same instants in milliseconds since the epoch, the engine's unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from store.timefmt import to_ms


@dataclass(frozen=True, slots=True)
class Movement:
    """One outbox event of the credit engine and the account's state right after it.

    ``event_id`` is unique across the whole store (``"<bucket>-<stream id>"``): applying the
    same movement twice records it once. ``version`` is the account's version after the event
    (+1 per event); the store's snapshot follows the highest version it has seen.
    """

    event_id: str
    account_id: str
    kind: str
    plan_delta: int
    bonus_delta: int
    tokens: int
    request_id: str | None
    reason: str | None
    occurred_ms: int
    version: int
    plan_credits: int
    bonus_credits: int
    tier: str
    subscribed: bool
    subscription_ends_ms: int | None
    period_end_ms: int
    total_tokens: int
    monthly_tokens: int

    @property
    def credits_delta(self) -> int:
        return self.plan_delta + self.bonus_delta


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """An account as the store of record holds it: the snapshot of its latest synced version."""

    account_id: str
    email: str | None
    tier: str
    plan_credits: int
    bonus_credits: int
    total_tokens: int
    monthly_tokens: int
    subscribed: bool
    subscription_ends_at: datetime | None
    period_end: datetime
    version: int
    """The Redis account version this snapshot is from; 0 before the first sync."""
    created_at: datetime
    updated_at: datetime

    @property
    def id(self) -> str:
        return self.account_id

    @property
    def credits_remaining(self) -> int:
        return self.plan_credits + self.bonus_credits

    @property
    def subscription_ends_ms(self) -> int | None:
        return None if self.subscription_ends_at is None else to_ms(self.subscription_ends_at)

    @property
    def period_end_ms(self) -> int:
        return to_ms(self.period_end)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key without its secret: the store keeps only the sha256 hex of the key."""

    key_id: str
    account_id: str
    key_hash: str
    display_prefix: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def id(self) -> str:
        return self.key_id

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """One credit movement as recorded; ``reason`` is the event's note."""

    event_id: str
    account_id: str
    kind: str
    plan_delta: int
    bonus_delta: int
    credits_delta: int
    tokens: int
    request_id: str | None
    reason: str | None
    occurred_at: datetime
    version: int
    recorded_at: datetime

    @property
    def occurred_ms(self) -> int:
        return to_ms(self.occurred_at)
