"""How an API key looks in JSON answers: the admin API, the CLI's ``--json`` and the account
holder's ``/api/user/keys`` show the same fields. Never a key's hash or secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from store.records import ApiKeyRecord
from store.timefmt import as_utc


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    text = as_utc(moment).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def key_view(key: ApiKeyRecord) -> dict[str, Any]:
    """The key's id, name, times and own limits (null: that one does not limit)."""
    return {
        "id": key.key_id,
        "prefix": key.display_prefix,
        "name": key.name,
        "createdAt": iso(key.created_at),
        "revokedAt": iso(key.revoked_at),
        "lastUsedAt": iso(key.last_used_at),
        "expiresAt": iso(key.expires_at),
        "creditLimit": key.credit_limit,
        "requestsPerMinute": key.requests_per_minute,
        "routes": None if key.routes is None else list(key.routes),
    }
