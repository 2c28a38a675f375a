"""How an API key looks in JSON answers: the admin API, the CLI's ``--json`` and the account
holder's ``/api/user/keys`` show the same fields. Never a key's hash or secret.

A key with a ``creditLimit`` also shows ``creditsSpent``: what it has spent (held or charged)
in its account's current period, as the limit counts it, read from the credit engine once per
answer (``key_spends``), not once per key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.services import Services
from store.records import ApiKeyRecord
from store.timefmt import as_utc


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    text = as_utc(moment).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def key_view(key: ApiKeyRecord, spent: Mapping[str, int]) -> dict[str, Any]:
    """The key's id, name, times and own limits (null: that one does not limit); with a
    credit limit, ``creditsSpent`` from ``spent`` (``key_spends``)."""
    view: dict[str, Any] = {
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
    if key.credit_limit is not None:
        view["creditsSpent"] = spent.get(key.key_id, 0)
    return view


async def key_spends(
    services: Services, account_id: str, keys: Sequence[ApiKeyRecord]
) -> dict[str, int]:
    """What each of ``keys`` with a credit limit has spent this period: one engine read for
    them all, none when no key has a credit limit."""
    limited = [k.key_id for k in keys if k.credit_limit is not None]
    if not limited:
        return {}
    return await services.credits.key_spend(account_id, limited)


async def key_views(
    services: Services, account_id: str, keys: Sequence[ApiKeyRecord]
) -> list[dict[str, Any]]:
    """The views of an account's ``keys``, their spend read once."""
    spent = await key_spends(services, account_id, keys)
    return [key_view(k, spent) for k in keys]


async def one_key_view(services: Services, account_id: str, key: ApiKeyRecord) -> dict[str, Any]:
    """The view of one key of the account (an answer to a create, a change, a revocation)."""
    return (await key_views(services, account_id, [key]))[0]
