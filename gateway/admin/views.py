"""How accounts, keys and ledger entries look in admin answers (API and ``--json``).

Built on ``usage_body`` so the admin API and ``GET /api/user/usage`` give the same numbers
in the same shape. Never includes a key's hash or secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.accounts.usage import usage_body
from gateway.credits.results import AccountState
from store.records import AccountRecord, ApiKeyRecord
from store.timefmt import as_utc


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    text = as_utc(moment).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def account_view(
    state: AccountState,
    record: AccountRecord | None = None,
    keys: list[ApiKeyRecord] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": state.account, **usage_body(state)}
    if record is not None:
        body["email"] = record.email
        body["createdAt"] = iso(record.created_at)
    if keys is not None:
        body["keys"] = [key_view(k) for k in keys]
    return body


def key_view(key: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "prefix": key.display_prefix,
        "name": key.name,
        "createdAt": iso(key.created_at),
        "revokedAt": iso(key.revoked_at),
        "lastUsedAt": iso(key.last_used_at),
    }


def record_view(record: AccountRecord) -> dict[str, Any]:
    """An account as the store last saw it (for lists: no Redis round trip per row)."""
    return {
        "id": record.account_id,
        "email": record.email,
        "tier": record.tier,
        "createdAt": iso(record.created_at),
    }
