"""The store of record's tables (SQLModel). Migrations in ``store/migrations`` match these.

Counts (credits, tokens, versions) are BIGINT: a grant has no upper bound, and one bad row
would otherwise stop the sync. Times are ``UTCDateTime``: stored as UTC, always read back
aware, also on SQLite (which keeps no zone).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from store.timefmt import as_utc, utc_now


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE``; binds any datetime as UTC, returns aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite's DATETIME has no zone: store the UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def _count(*, index: bool = False) -> Any:
    return Field(default=0, sa_type=BigInteger, nullable=False, index=index)


def _time(*, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=UTCDateTime, nullable=True)
    return Field(default_factory=utc_now, sa_type=UTCDateTime, nullable=False)


class Account(SQLModel, table=True):
    """An account's snapshot, as of the Redis version ``version`` (only ever moves forward)."""

    __tablename__ = "accounts"

    id: str = Field(primary_key=True, max_length=64)
    email: str | None = Field(default=None, nullable=True)
    tier: str = Field(max_length=32, nullable=False)
    plan_credits: int = _count()
    bonus_credits: int = _count()
    total_tokens: int = _count()
    monthly_tokens: int = _count()
    subscribed: bool = Field(default=False, nullable=False)
    subscription_ends_at: datetime | None = _time(nullable=True)
    period_end: datetime = Field(sa_type=UTCDateTime, nullable=False)
    version: int = _count()
    created_at: datetime = _time()
    updated_at: datetime = _time()


class ApiKey(SQLModel, table=True):
    """An API key: only its sha256 hex is kept; ``display_prefix`` lets people recognise it.

    Its own limits are null when it has none: ``routes`` is a JSON array of path prefixes.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_api_keys_account_id_accounts"
        ),
        Index("ix_api_keys_account_id", "account_id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(max_length=64, nullable=False)
    key_hash: str = Field(sa_type=String(64), nullable=False)
    display_prefix: str = Field(max_length=32, nullable=False)
    name: str | None = Field(default=None, nullable=True)
    created_at: datetime = _time()
    revoked_at: datetime | None = _time(nullable=True)
    last_used_at: datetime | None = _time(nullable=True)
    expires_at: datetime | None = _time(nullable=True)
    credit_limit: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    requests_per_minute: int | None = Field(default=None, sa_type=Integer, nullable=True)
    routes: str | None = Field(default=None, sa_type=Text, nullable=True)


class LedgerEntry(SQLModel, table=True):
    """One credit movement, exactly once per event id; never updated after insert.

    A proxied request has one row, when it is settled: ``charge`` (the deltas are the credits
    it held) or ``refund`` (the deltas are what the refund could not give back: usually 0);
    ``held_plan`` / ``held_bonus`` say what it held. Ledgers written before that also hold a
    ``hold`` row per request, and their charge and refund rows hold 0.

    No foreign key to ``accounts``: the ledger is the raw record of what Redis did, written in
    the same transaction as the snapshot that creates any missing account.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_account_time", "account_id", "occurred_at", "version"),
        Index(
            "ix_ledger_entries_time",
            "occurred_at",
            postgresql_include=[
                "kind",
                "credits_delta",
                "tokens",
                "request_id",
                "account_id",
                "route",
                "key_id",
            ],
        ),
    )

    event_id: str = Field(primary_key=True, max_length=96)
    account_id: str = Field(max_length=64, nullable=False)
    kind: str = Field(max_length=16, nullable=False)
    plan_delta: int = _count()
    bonus_delta: int = _count()
    credits_delta: int = _count()
    tokens: int = _count()
    held_plan: int = Field(
        default=0, sa_type=BigInteger, nullable=False, sa_column_kwargs={"server_default": "0"}
    )
    held_bonus: int = Field(
        default=0, sa_type=BigInteger, nullable=False, sa_column_kwargs={"server_default": "0"}
    )
    request_id: str | None = Field(default=None, nullable=True)
    reason: str | None = Field(default=None, nullable=True)
    occurred_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    version: int = _count()
    recorded_at: datetime = _time()
    route: str | None = Field(default=None, nullable=True)
    """The route prefix of the request that caused it; None for the rest (and, until the
    engine's events carry it, for every movement)."""
    key_id: str | None = Field(default=None, sa_type=String(64), nullable=True)
    """The API key of that request; None as ``route``."""


class UsageDay(SQLModel, table=True):
    """The ledger's usage summed per UTC day, account, route and key: the roll-up the
    operators' history across accounts reads instead of the ledger (``store/usage_daily.py``
    keeps it, in the transaction of the ledger rows it sums).

    ``route`` and ``key_id`` are ``''`` for movements that name none (a key column cannot be
    null); reads turn that back into None.
    """

    __tablename__ = "usage_daily"

    day: date = Field(sa_type=Date, primary_key=True)
    account_id: str = Field(max_length=64, primary_key=True)
    route: str = Field(default="", primary_key=True)
    key_id: str = Field(default="", sa_type=String(64), primary_key=True)
    requests: int = _count()
    credits_charged: int = _count()
    credits_refunded: int = _count()
    tokens: int = _count()


# The tables as Core objects, for bulk statements (SQLModel does not type ``__table__``).
ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
API_KEYS: Table = ApiKey.__table__  # type: ignore[attr-defined]
LEDGER: Table = LedgerEntry.__table__  # type: ignore[attr-defined]
USAGE_DAILY: Table = UsageDay.__table__  # type: ignore[attr-defined]
