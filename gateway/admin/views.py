"""How accounts, keys and ledger entries look in admin answers (API and ``--json``).

Built on ``usage_body`` so the admin API and ``GET /api/user/usage`` give the same numbers
in the same shape. Never includes a key's hash or secret.
"""

from __future__ import annotations

from typing import Any

from gateway.accounts.keyviews import iso
from gateway.accounts.usage import usage_body
from gateway.credits.results import AccountState
from store.records import AccountRecord

__all__ = ["account_view", "iso", "record_view"]


def account_view(
    state: AccountState,
    record: AccountRecord | None = None,
    keys: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``keys``: the account's keys as ``gateway.accounts.keyviews.key_views`` shows them."""
    body: dict[str, Any] = {"id": state.account, **usage_body(state)}
    if record is not None:
        body["email"] = record.email
        body["createdAt"] = iso(record.created_at)
    if keys is not None:
        body["keys"] = keys
    return body


def record_view(record: AccountRecord) -> dict[str, Any]:
    """An account as the store last saw it (for lists: no Redis round trip per row)."""
    return {
        "id": record.account_id,
        "email": record.email,
        "tier": record.tier,
        "createdAt": iso(record.created_at),
    }
