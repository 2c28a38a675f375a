"""Reading and writing the store of record: keyword-only functions over a caller's Session.

Every function works inside the caller's transaction (``store.database.session``) and never
commits. It is synchronous: async code calls it with ``asyncio.to_thread``. Driver errors
about the connection become ``StoreUnavailable`` here, once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import and_, bindparam, func, or_, update
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from store.database import boundary
from store.errors import (
    DuplicateAccount,
    DuplicateApiKey,
    InvalidCursor,
    RevokedApiKey,
    UnknownAccount,
)
from store.models import API_KEYS, LEDGER, Account, ApiKey, LedgerEntry, UTCDateTime
from store.movements import apply_movements
from store.records import (
    KEY_CHANGES,
    AccountRecord,
    AccountSnapshot,
    ApiKeyRecord,
    LedgerFact,
    LedgerRecord,
)
from store.snapshots import columns_of, snapshot_fields
from store.timefmt import as_utc, to_datetime, utc_now

__all__ = [
    "all_account_ids",
    "apply_movements",
    "create_account",
    "create_api_key",
    "find_api_key",
    "get_account",
    "ledger_facts",
    "ledger_page",
    "ledger_totals",
    "list_accounts",
    "list_api_keys",
    "revoke_api_key",
    "touch_api_keys",
    "update_api_key",
]

# -- accounts ----------------------------------------------------------------------------------


@boundary
def create_account(
    session: Session,
    *,
    account_id: str,
    email: str | None,
    tier: str,
    plan_credits: int,
    period_end_ms: int,
    subscribed: bool = False,
    subscription_ends_ms: int | None = None,
) -> AccountRecord:
    """Add an account at version 0 (the first sync moves it to Redis's version).

    Raises ``DuplicateAccount`` if the id exists.
    """
    if session.get(Account, account_id) is not None:
        raise DuplicateAccount(account_id)
    snapshot = AccountSnapshot(
        plan_credits=plan_credits,
        bonus_credits=0,
        tier=tier,
        subscribed=subscribed,
        subscription_ends_ms=subscription_ends_ms,
        period_end_ms=period_end_ms,
        total_tokens=0,
        monthly_tokens=0,
        version=0,
    )
    now = utc_now()
    row = Account(
        id=account_id, email=email, created_at=now, updated_at=now, **columns_of(snapshot)
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise DuplicateAccount(account_id) from exc
    return _account(row)


@boundary
def get_account(session: Session, *, account_id: str) -> AccountRecord | None:
    row = session.get(Account, account_id)
    return None if row is None else _account(row)


@boundary
def list_accounts(
    session: Session, *, limit: int = 100, after: str | None = None, containing: str = ""
) -> list[AccountRecord]:
    """Accounts in id order; ``after`` is the last id of the previous page. ``containing``:
    only those whose id or email holds that text, whatever its case (``%`` and ``_`` in it
    are plain characters)."""
    stmt = select(Account).order_by(col(Account.id)).limit(_positive(limit))
    if after is not None:
        stmt = stmt.where(col(Account.id) > after)
    if containing:
        text = containing.lower()
        stmt = stmt.where(
            or_(
                func.lower(col(Account.id)).contains(text, autoescape=True),
                func.lower(col(Account.email)).contains(text, autoescape=True),
            )
        )
    return [_account(row) for row in session.exec(stmt)]


@boundary
def ended_subscriptions(
    session: Session, *, ended_by_ms: int, after: str = "", limit: int = 500
) -> list[str]:
    """Ids of accounts still subscribed whose subscription ended at or before ``ended_by_ms``,
    in id order; ``after`` is the last id of the previous page (for the expiry sweep)."""
    stmt = (
        select(Account.id)
        .where(col(Account.subscribed).is_(True))
        .where(col(Account.subscription_ends_at).is_not(None))
        .where(col(Account.subscription_ends_at) <= to_datetime(ended_by_ms))
        .where(col(Account.id) > after)
        .order_by(col(Account.id))
        .limit(_positive(limit))
    )
    return list(session.exec(stmt))


@boundary
def all_account_ids(session: Session) -> list[str]:
    return list(session.exec(select(Account.id).order_by(col(Account.id))))


def _account(row: Account) -> AccountRecord:
    return AccountRecord(
        account_id=row.id,
        email=row.email,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        **snapshot_fields(row),
    )


# -- API keys ----------------------------------------------------------------------------------


@boundary
def create_api_key(
    session: Session,
    *,
    key_id: str,
    account_id: str,
    key_hash: str,
    display_prefix: str,
    name: str | None = None,
    expires_at: datetime | None = None,
    credit_limit: int | None = None,
    requests_per_minute: int | None = None,
    routes: Sequence[str] | None = None,
) -> ApiKeyRecord:
    """Add a key (its hash only), with its own limits (None: no limit).

    ``UnknownAccount`` / ``DuplicateApiKey`` when they apply.
    """
    if session.get(Account, account_id) is None:
        raise UnknownAccount(account_id)
    row = ApiKey(
        id=key_id,
        account_id=account_id,
        key_hash=key_hash,
        display_prefix=display_prefix,
        name=name,
        created_at=utc_now(),
        expires_at=expires_at,
        credit_limit=credit_limit,
        requests_per_minute=requests_per_minute,
        routes=_routes_text(routes),
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise DuplicateApiKey(f"an API key with id {key_id!r} or that hash exists") from exc
    return _api_key(row)


@boundary
def find_api_key(session: Session, *, key_hash: str) -> ApiKeyRecord | None:
    """The key with that hash, revoked or not: the caller decides what revoked means."""
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()
    return None if row is None else _api_key(row)


@boundary
def list_api_keys(session: Session, *, account_id: str) -> list[ApiKeyRecord]:
    """The account's keys, oldest first, revoked ones included."""
    stmt = (
        select(ApiKey)
        .where(ApiKey.account_id == account_id)
        .order_by(col(ApiKey.created_at), col(ApiKey.id))
    )
    return [_api_key(row) for row in session.exec(stmt)]


@boundary
def revoke_api_key(session: Session, *, account_id: str, key_id: str) -> ApiKeyRecord | None:
    """Mark the key revoked; idempotent (the first revocation time stays). None: no such key."""
    row = session.get(ApiKey, key_id)
    if row is None or row.account_id != account_id:
        return None
    if row.revoked_at is None:
        row.revoked_at = utc_now()
        session.add(row)
        session.flush()
    return _api_key(row)


@boundary
def update_api_key(
    session: Session, *, account_id: str, key_id: str, changes: Mapping[str, object]
) -> ApiKeyRecord | None:
    """Change a key's name or limits: only the fields in ``changes`` (``KEY_CHANGES``), an
    explicit None clearing a limit. None: the account has no such key; ``RevokedApiKey`` when
    it is revoked. The values are the caller's to check (gateway.accounts.keyfields).
    """
    unknown = sorted(set(changes) - KEY_CHANGES)
    if unknown:
        raise ValueError(f"not a changeable field of an API key: {', '.join(unknown)}")
    row = session.get(ApiKey, key_id)
    if row is None or row.account_id != account_id:
        return None
    if row.revoked_at is not None:
        raise RevokedApiKey(key_id)
    for name, value in changes.items():
        if name == "routes" and value is not None:
            value = _routes_text(cast(Sequence[str], value))
        setattr(row, name, value)
    session.add(row)
    session.flush()
    return _api_key(row)


@boundary
def touch_api_keys(session: Session, *, used: Mapping[str, datetime]) -> None:
    """Record when keys were last used (key id -> time), in one batched UPDATE.

    A time older than the stored one is ignored, so late or reordered batches are harmless,
    and so is a time after the key's revocation (a replica may serve a revoked key for up to a
    second): ``last_used_at`` never reads later than ``revoked_at``.
    """
    if not used:
        return
    at = bindparam("touch_at", type_=UTCDateTime())
    stmt = (
        update(API_KEYS)
        .where(API_KEYS.c.id == bindparam("touch_id"))
        .where(or_(API_KEYS.c.last_used_at.is_(None), API_KEYS.c.last_used_at < at))
        .where(or_(API_KEYS.c.revoked_at.is_(None), API_KEYS.c.revoked_at >= at))
        .values(last_used_at=at)
    )
    params = [{"touch_id": key_id, "touch_at": used[key_id]} for key_id in sorted(used)]
    session.connection().execute(stmt, params)


def _api_key(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row.id,
        account_id=row.account_id,
        key_hash=row.key_hash,
        display_prefix=row.display_prefix,
        name=row.name,
        created_at=as_utc(row.created_at),
        revoked_at=_aware(row.revoked_at),
        last_used_at=_aware(row.last_used_at),
        expires_at=_aware(row.expires_at),
        credit_limit=row.credit_limit,
        requests_per_minute=row.requests_per_minute,
        routes=None if row.routes is None else tuple(json.loads(row.routes)),
    )


def _routes_text(routes: Sequence[str] | None) -> str | None:
    """A key's route prefixes as the column keeps them: a JSON array (None: every route)."""
    return None if routes is None else json.dumps(list(routes))


# -- the ledger --------------------------------------------------------------------------------


@boundary
def ledger_page(
    session: Session, *, account_id: str, limit: int = 50, before: str | None = None
) -> list[LedgerRecord]:
    """The account's movements, newest first (occurred_at, then version, then event id, desc).

    ``before`` is the cursor: the ``event_id`` of the last entry of the previous page; the page
    holds the entries after it in that order. ``InvalidCursor`` if it is not an event of the
    account.
    """
    stmt = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
    if before is not None:
        cursor = session.get(LedgerEntry, before)
        if cursor is None or cursor.account_id != account_id:
            raise InvalidCursor(f"{before!r} is not a ledger entry of account {account_id!r}")
        occurred, version = col(LedgerEntry.occurred_at), col(LedgerEntry.version)
        stmt = stmt.where(
            or_(
                occurred < cursor.occurred_at,
                and_(
                    occurred == cursor.occurred_at,
                    or_(
                        version < cursor.version,
                        and_(version == cursor.version, col(LedgerEntry.event_id) < before),
                    ),
                ),
            )
        )
    stmt = stmt.order_by(
        col(LedgerEntry.occurred_at).desc(),
        col(LedgerEntry.version).desc(),
        col(LedgerEntry.event_id).desc(),
    ).limit(_positive(limit))
    return [_ledger(row) for row in session.exec(stmt)]


@boundary
def ledger_totals(session: Session, *, account_id: str | None = None) -> dict[str, tuple[int, int]]:
    """Per account: (sum of plan deltas, sum of bonus deltas) over the whole ledger.

    For the audit: each account's sums equal its plan and bonus credits once synced.
    """
    stmt = select(
        LedgerEntry.account_id,
        func.coalesce(func.sum(LedgerEntry.plan_delta), 0),
        func.coalesce(func.sum(LedgerEntry.bonus_delta), 0),
    ).group_by(col(LedgerEntry.account_id))
    if account_id is not None:
        stmt = stmt.where(LedgerEntry.account_id == account_id)
    return {acct: (int(plan), int(bonus)) for acct, plan, bonus in session.exec(stmt)}


@boundary
def ledger_facts(session: Session, account_ids: Sequence[str]) -> dict[str, list[LedgerFact]]:
    """Per account of ``account_ids``, every ledger row's event id, version, deltas and tokens
    (for the audit's per-event checks), in no particular order. The audit asks a page of
    accounts at a time: the whole ledger would not fit in memory."""
    c = LEDGER.c
    stmt = core_select(
        c.account_id, c.event_id, c.version, c.plan_delta, c.bonus_delta, c.tokens
    ).where(c.account_id.in_(account_ids))
    facts: dict[str, list[LedgerFact]] = {}
    for account, *values in session.connection().execute(stmt):
        facts.setdefault(account, []).append(LedgerFact(*values))
    return facts


def _ledger(row: LedgerEntry) -> LedgerRecord:
    return LedgerRecord(
        event_id=row.event_id,
        account_id=row.account_id,
        kind=row.kind,
        plan_delta=row.plan_delta,
        bonus_delta=row.bonus_delta,
        credits_delta=row.credits_delta,
        tokens=row.tokens,
        request_id=row.request_id,
        reason=row.reason,
        occurred_at=as_utc(row.occurred_at),
        version=row.version,
        recorded_at=as_utc(row.recorded_at),
        held_plan=row.held_plan,
        held_bonus=row.held_bonus,
        route=row.route,
        key_id=row.key_id,
    )


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _positive(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return limit
