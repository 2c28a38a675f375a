"""The store's vocabulary in and out: plain frozen dataclasses, no SQL types.

An account's snapshot is in the engine's units (times in milliseconds since the epoch), with
datetime properties; every other time comes back as an aware UTC datetime (``*_at`` fields),
with ``*_ms`` properties where the engine needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from store.timefmt import to_datetime, to_ms


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """An account's own fields as of one Redis version, in the engine's units.

    The one list of them on the store's side: a movement carries them as they are after its
    event, an account record is the latest synced, and ``store.snapshots`` maps them to the
    accounts table's columns. ``version`` is the account's Redis version (per event
    ``max(v + 1, Redis TIME in us)``: strictly increasing, even after a failover that lost
    writes; 0 before the first sync).
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
class Movement(AccountSnapshot):
    """One outbox event of the credit engine and the account's snapshot right after it.

    ``event_id`` is unique across the whole store (``"<bucket>-<stream id>"``): applying the
    same movement twice records it once. The store's snapshot follows the highest version it
    has seen.
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
    held_plan: int = 0
    """What the settled or refunded request held (0 for other movements)."""
    held_bonus: int = 0
    route: str | None = None
    """The route prefix of the request that caused it, when the event says (else None)."""
    key_id: str | None = None
    """The API key of that request, when the event says (else None)."""

    @property
    def credits_delta(self) -> int:
        return self.plan_delta + self.bonus_delta


@dataclass(frozen=True, slots=True)
class AccountRecord(AccountSnapshot):
    """An account as the store of record holds it: the snapshot of its latest synced version,
    who it is and when it was created and last written."""

    account_id: str
    email: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def id(self) -> str:
        return self.account_id

    @property
    def subscription_ends_at(self) -> datetime | None:
        ends = self.subscription_ends_ms
        return None if ends is None else to_datetime(ends)

    @property
    def period_end(self) -> datetime:
        return to_datetime(self.period_end_ms)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key without its secret: the store keeps only the sha256 hex of the key.

    Its own limits (``expires_at`` to ``routes``) are None where it has none.
    """

    key_id: str
    account_id: str
    key_hash: str
    display_prefix: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None = None
    credit_limit: int | None = None
    """Credits the key may spend in one monthly period of its account."""
    requests_per_minute: int | None = None
    routes: tuple[str, ...] | None = None
    """Path prefixes the key may call; None: every route."""

    @property
    def id(self) -> str:
        return self.key_id

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def limited(self) -> bool:
        """True when the key carries any limit of its own."""
        return any(
            value is not None
            for value in (self.expires_at, self.credit_limit, self.requests_per_minute, self.routes)
        )


KEY_CHANGES = frozenset({"name", "expires_at", "credit_limit", "requests_per_minute", "routes"})
"""The fields of a key ``repository.update_api_key`` may change (None clears a limit)."""


@dataclass(frozen=True, slots=True)
class LedgerFact:
    """What the audit checks of one ledger row."""

    event_id: str
    version: int
    plan_delta: int
    bonus_delta: int
    tokens: int


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
    held_plan: int = 0
    held_bonus: int = 0
    route: str | None = None
    key_id: str | None = None

    @property
    def held_credits(self) -> int:
        """What the settled or refunded request held."""
        return self.held_plan + self.held_bonus

    @property
    def occurred_ms(self) -> int:
        return to_ms(self.occurred_at)
