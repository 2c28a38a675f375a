"""How accounts, keys and ledger entries look in admin answers (API and ``--json``).

Built on ``usage_body`` so the admin API and ``GET /api/user/usage`` give the same numbers
in the same shape. Never includes a key's hash or secret.
"""

from __future__ import annotations

from typing import Any

from gateway.accounts.keyviews import iso, key_view
from gateway.accounts.usage import usage_body
from gateway.credits.results import AccountState
from store.records import AccountRecord, ApiKeyRecord

__all__ = ["account_view", "iso", "key_view", "record_view"]


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


def record_view(record: AccountRecord) -> dict[str, Any]:
    """An account as the store last saw it (for lists: no Redis round trip per row)."""
    return {
        "id": record.account_id,
        "email": record.email,
        "tier": record.tier,
        "createdAt": iso(record.created_at),
    }
