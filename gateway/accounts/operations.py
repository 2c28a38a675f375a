"""Account operations shared by the admin API, the CLI and ``creditgate demo``.

Balances and tiers change only through the credit engine (Redis is their one writer); the
store of record holds the account row and the API key hashes, written here directly. An
account Redis has lost is restored from the store before it is changed. ``reason`` strings
arrive already saying who acts (``"admin: ..."``, ``"cli: ..."``) and land in the ledger.

``store.repository`` is imported by each function that uses it, not with this module: the
admin API is part of every server, and a server that only proxies never loads SQLAlchemy.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from gateway.accounts import validation
from gateway.accounts.apikeys import new_key
from gateway.accounts.keycache import announce_key_change
from gateway.accounts.keyfields import KeyChanges, KeyLimits
from gateway.accounts.keyspend import seed_from_store
from gateway.accounts.restore import load_record, restore_from_store
from gateway.accounts.stored import in_store, orm_loaded
from gateway.credits.engine import PERIOD_MS, TierAction
from gateway.credits.results import AccountState, TierChange
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.services import Services
from store.errors import DuplicateAccount, InvalidCursor, RevokedApiKey
from store.records import AccountRecord, ApiKeyRecord, LedgerRecord

if TYPE_CHECKING:
    from sqlmodel import Session

log = logging.getLogger("creditgate.accounts")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CreatedAccount:
    """A new account: ``api_key`` is the secret, shown to the caller once and never stored."""

    account_id: str
    api_key: str
    key_id: str
    state: AccountState
    record: AccountRecord | None = None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``api_key`` is the secret, shown to the caller once and never stored."""

    account_id: str
    api_key: str
    key_id: str
    display_prefix: str
    record: ApiKeyRecord | None = None


@dataclass(frozen=True, slots=True)
class LedgerPage:
    """Movements newest first; ``next`` is the cursor of the following page, None at the end."""

    entries: list[LedgerRecord]
    next: str | None


@dataclass(frozen=True, slots=True)
class AccountReport:
    """Everything an operator sees about one account: live state, store row, keys."""

    state: AccountState
    record: AccountRecord
    keys: list[ApiKeyRecord]


def operation_id() -> str:
    """The request id an operator's change carries into the ledger, like a proxied call's."""
    return "op_" + secrets.token_hex(12)


def attributed(actor: str, reason: str) -> str:
    """The ledger note: who acted, and why when they said."""
    return f"{actor}: {reason}" if reason else actor


async def create_account(
    services: Services,
    *,
    account_id: str | None = None,
    email: str | None = None,
    tier: str = "free",
    months: int = 0,
    reason: str = "",
    request_id: str | None = None,
) -> CreatedAccount:
    """Write the store rows (account and first key), then open the account in Redis.

    The store comes first, in one transaction, so a duplicate id is refused (``Conflict``)
    before Redis is touched, and an account never exists without its key. If opening in
    Redis then fails, the account stays in the store and is restored from it on first touch
    (a retry of the create answers ``Conflict``). If Redis already holds the id (a store
    that lost rows), the live Redis state is kept as the truth and a warning logged.
    """
    await orm_loaded()
    from store import repository

    if account_id is None:
        account_id = "acct_" + secrets.token_hex(8)
    account_id = validation.account_id(account_id)
    if email is not None:
        email = validation.email(email)
    validation.tier(tier, services.settings.tiers, paid=False)
    if months and (tier == "free" or not 0 < months <= validation.MAX_MONTHS):
        raise InvalidRequest(f"field 'months' must be 1-{validation.MAX_MONTHS}, paid tiers only")
    key = new_key()
    # The row starts at version 0 with the engine's opening values, the times estimated
    # from this host's clock; the first sync replaces them with what the script recorded.
    now = int(time.time() * 1000)
    paid = tier != "free"

    def write(s: Session) -> AccountRecord:
        record = repository.create_account(
            s,
            account_id=account_id,
            email=email,
            tier=tier,
            plan_credits=services.settings.tiers[tier].credits,
            period_end_ms=now + PERIOD_MS,
            subscribed=paid,
            subscription_ends_ms=now + months * PERIOD_MS if paid and months else None,
        )
        repository.create_api_key(
            s,
            account_id=account_id,
            key_id=key.key_id,
            key_hash=key.key_hash,
            display_prefix=key.display_prefix,
            name="default",
        )
        return record

    try:
        record = await in_store(services.db, write, passing=(DuplicateAccount,))
    except DuplicateAccount as exc:
        raise Conflict(f"account {account_id!r} already exists") from exc
    change = await services.credits.open(
        account_id, tier=tier, months=months, reason=reason, request_id=request_id or operation_id()
    )
    if change.status == "exists":
        log.warning("account %s was already in Redis; keeping its live state", account_id)
    state = _state(account_id, change)
    log.info("account %s created (tier %s)", account_id, tier)
    return CreatedAccount(account_id, key.secret, key.key_id, state, record)


async def account_state(services: Services, account_id: str) -> AccountState:
    """The live state (after due expiry and rollover); restored from the store if Redis lost it."""
    state = await services.credits.status(account_id)
    if state is None:
        state = await _restore(services, account_id)
    return state


async def account_report(services: Services, account_id: str) -> AccountReport:
    await orm_loaded()
    from store import repository

    state = await account_state(services, account_id)
    record = await _record(services, account_id)
    keys = await in_store(services.db, lambda s: repository.list_api_keys(s, account_id=account_id))
    return AccountReport(state, record, list(keys))


async def list_accounts(
    services: Services, *, limit: int = 100, after: str | None = None, containing: str = ""
) -> list[AccountRecord]:
    await orm_loaded()
    from store import repository

    return list(
        await in_store(
            services.db,
            lambda s: repository.list_accounts(s, limit=limit, after=after, containing=containing),
        )
    )


async def grant(
    services: Services,
    account_id: str,
    credits: int,
    *,
    reason: str,
    request_id: str | None = None,
) -> AccountState:
    """Add bonus credits (they survive resets and tier changes).

    Applied once per ``request_id`` (default: a new one): a caller that retries passes the
    same, and the engine adds nothing the second time.
    """
    rid = request_id or operation_id()
    return await _on_account(
        services,
        account_id,
        lambda: services.credits.grant(account_id, credits, reason=reason, request_id=rid),
    )


async def change_tier(
    services: Services,
    account_id: str,
    action: TierAction,
    *,
    tier: str = "",
    months: int = 0,
    reason: str = "",
    request_id: str | None = None,
) -> AccountState:
    """Upgrade, renew or downgrade; renewing an account without a subscription is a conflict.

    Applied once per ``request_id``, as ``grant`` is.
    """
    rid = request_id or operation_id()
    change = await _on_account_change(
        services,
        account_id,
        lambda: services.credits.set_tier(
            account_id, action, tier=tier, months=months, reason=reason, request_id=rid
        ),
    )
    if change.status == "not_subscribed":
        raise Conflict(f"account {account_id!r} has no subscription to renew; upgrade it")
    if change.status == "unknown_tier":
        raise InvalidRequest(f"field 'tier': unknown tier {tier!r}")
    return _state(account_id, change)


async def create_key(
    services: Services, account_id: str, *, name: str = "", limits: KeyLimits | None = None
) -> CreatedKey:
    """A new key of the account, with its own limits (checked: gateway.accounts.keyfields)."""
    await _record(services, account_id)
    return await _new_key(services, account_id, name=name, limits=limits or KeyLimits())


async def update_key(
    services: Services, account_id: str, key_id: str, *, changes: KeyChanges
) -> ApiKeyRecord:
    """Change a key's name or limits (PATCH: only ``changes``; None clears), then tell every
    replica, as a revocation does, so the new limits apply everywhere within 1 s. A credit
    limit counts what the key spent this period before it was set (``keyspend``).

    ``NotFound``: the account has no such key; ``Conflict``: the key is revoked.
    """
    await orm_loaded()
    from store import repository

    try:
        changed = await in_store(
            services.db,
            lambda s: repository.update_api_key(
                s, account_id=account_id, key_id=key_id, changes=changes
            ),
            passing=(RevokedApiKey,),
        )
    except RevokedApiKey as exc:
        raise Conflict(f"key {key_id!r} is revoked: a revoked key cannot be changed") from exc
    if changed is None:
        raise NotFound(f"key {key_id!r} of account {account_id!r} not found")
    if changes.get("credit_limit") is not None:
        # Its spend was not counted while it had no limit: the store knows it.
        await seed_from_store(services, account_id, key_id)
    await announce_key_change(services.redis, changed.key_hash)
    log.info("key %s of account %s changed: %s", key_id, account_id, ", ".join(sorted(changes)))
    return changed


async def list_keys(services: Services, account_id: str) -> list[ApiKeyRecord]:
    await orm_loaded()
    from store import repository

    await _record(services, account_id)
    return list(
        await in_store(services.db, lambda s: repository.list_api_keys(s, account_id=account_id))
    )


async def revoke_key(services: Services, account_id: str, key_id: str) -> ApiKeyRecord:
    """Revoke in the store, then tell every replica to forget the key (within 1 s).

    Revoking a revoked key is not an error: the answer is the same, so retries are safe.
    """
    await orm_loaded()
    from store import repository

    revoked = await in_store(
        services.db,
        lambda s: repository.revoke_api_key(s, account_id=account_id, key_id=key_id),
    )
    if revoked is None:
        raise NotFound(f"key {key_id!r} of account {account_id!r} not found")
    await announce_key_change(services.redis, revoked.key_hash)
    await services.credits.forget_key(account_id, key_id)
    log.info("key %s of account %s revoked", key_id, account_id)
    return revoked


async def ledger_page(
    services: Services, account_id: str, *, limit: int = 50, before: str | None = None
) -> LedgerPage:
    """One page of the store's ledger of an account, newest first (what the sync has copied)."""
    await orm_loaded()
    from store import repository

    await _record(services, account_id)
    try:
        entries = await in_store(
            services.db,
            lambda s: repository.ledger_page(s, account_id=account_id, limit=limit, before=before),
            passing=(InvalidCursor,),
        )
    except InvalidCursor as exc:
        raise InvalidRequest(f"query 'before' is not a cursor of this ledger: {exc}") from exc
    page = list(entries)
    following = page[-1].event_id if len(page) == limit else None
    return LedgerPage(page, following)


async def _new_key(
    services: Services, account_id: str, *, name: str, limits: KeyLimits
) -> CreatedKey:
    await orm_loaded()
    from store import repository

    key = new_key()
    record = await in_store(
        services.db,
        lambda s: repository.create_api_key(
            s,
            account_id=account_id,
            key_id=key.key_id,
            key_hash=key.key_hash,
            display_prefix=key.display_prefix,
            name=name,
            expires_at=limits.expires_at,
            credit_limit=limits.credit_limit,
            requests_per_minute=limits.requests_per_minute,
            routes=limits.routes,
        ),
    )
    return CreatedKey(account_id, key.secret, key.key_id, key.display_prefix, record)


async def _record(services: Services, account_id: str) -> AccountRecord:
    """The store's row of the account; ``NotFound`` when it has none."""
    record = await load_record(services, account_id)
    if record is None:
        raise NotFound(f"account {account_id!r} not found")
    return record


async def _restore(services: Services, account_id: str) -> AccountState:
    state = await restore_from_store(services, account_id)
    if state is None:
        raise NotFound(f"account {account_id!r} not found")
    return state


async def _on_account_change(
    services: Services, account_id: str, change: Callable[[], Awaitable[TierChange]]
) -> TierChange:
    """Run an engine change; if Redis lacks the account, restore it from the store, retry once."""
    result = await change()
    if result.status == "missing":
        await _restore(services, account_id)
        result = await change()
    if result.status == "missing":
        raise NotFound(f"account {account_id!r} not found")
    return result


async def _on_account(
    services: Services, account_id: str, change: Callable[[], Awaitable[TierChange]]
) -> AccountState:
    return _state(account_id, await _on_account_change(services, account_id, change))


def _state(account_id: str, change: TierChange) -> AccountState:
    if change.status == "unknown_tier":
        raise InvalidRequest("field 'tier': unknown tier")
    if change.account is None:
        raise NotFound(f"account {account_id!r} not found")
    return change.account
