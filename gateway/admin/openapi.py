"""The admin API's part of the OpenAPI document.

``gateway.web.openapi`` assembles the whole document; the admin operations live here, beside
the API they describe, so a change to an endpoint and to its documentation sit together.
Every bound is taken from the code that enforces it (gateway.accounts.validation, and the
API's page limit from gateway.admin.operations), so the document cannot drift from it.
Every write (``writes=True``) takes an ``Idempotency-Key`` (gateway.admin.idempotency).
"""

from __future__ import annotations

from gateway.accounts import validation
from gateway.admin.idempotency import KEPT_MS, SHOWN_ONCE
from gateway.admin.operations import API
from gateway.openapi import (
    Schema,
    error_refs,
    history_operation,
    json_body,
    ledger_range_operation,
    ok,
    query,
    ref,
)

ACCOUNT_ID: Schema = {
    "type": "string",
    "pattern": validation.ACCOUNT_ID.pattern,
    "maxLength": validation.MAX_ACCOUNT_ID,
}
KEY_ID: Schema = {"type": "string", "pattern": validation.KEY_ID.pattern}
MONTHS: Schema = {
    "type": "integer",
    "minimum": validation.MIN_MONTHS,
    "maximum": validation.MAX_MONTHS,
}
TEXT_LINE = r"^[^\x00-\x1f\x7f]*$"
"""Free text: no control characters (the store refuses NUL)."""
REASON: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": validation.MAX_REASON,
    "pattern": r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$",
}
IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": validation.MAX_IDEMPOTENCY_KEY,
        # Printable ASCII; HTTP drops spaces at either end of a header's value.
        "pattern": r"^[!-~]([ -~]*[!-~])?$",
    },
    "description": (
        f"A retry with the same key within {KEPT_MS // 3_600_000} h answers the first success "
        "again (Idempotent-Replayed: true) and changes nothing; the same key for another "
        "method, path or body: 422; while the first is still running: 409. An error is not "
        f"kept: its retry runs again, applied at most once. A replay never holds {SHOWN_ONCE}."
    ),
}
REPLAYED: Schema = {
    "Idempotent-Replayed": {
        "description": "true: the first answer to this Idempotency-Key again; nothing changed.",
        "required": False,
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def admin_operation(
    summary: str,
    responses: dict[str, Schema],
    *statuses: int,
    body: Schema | None = None,
    params: list[Schema] | None = None,
    writes: bool = False,
) -> Schema:
    """``writes``: it changes something, so it takes an Idempotency-Key, its success may be a
    replay (``Idempotent-Replayed``), and the key has refusals of its own (409 in flight, 422
    reused)."""
    if writes:
        responses = {
            status: {**answer, "headers": REPLAYED} for status, answer in responses.items()
        }
        statuses = (*statuses, 409, 422)
        params = [*(params or []), IDEMPOTENCY_KEY]
    op: Schema = {
        "tags": ["admin"],
        "summary": summary,
        "security": [{"adminToken": []}],
        "responses": {**responses, **error_refs(400, 401, *statuses, 503)},
    }
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


def shown_once(responses: dict[str, Schema]) -> dict[str, Schema]:
    """A success holding a new key's secret: not in a replay, which lacks it (never kept)."""
    (status, answer), *_ = responses.items()
    schema = answer["content"]["application/json"]["schema"]
    required = [name for name in schema["required"] if name != SHOWN_ONCE]
    content = {"application/json": {"schema": {**schema, "required": required}}}
    return {status: {**answer, "content": content}}


def path_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


PAGE_SIZE = query(
    "limit", {"type": "integer", "minimum": 1, "maximum": API.page_limit}, "Page size."
)


ACCOUNT_FILTER = query("account", ACCOUNT_ID, "Only this account.")


def admin_paths() -> dict[str, Schema]:
    acct = [path_param("id", ACCOUNT_ID)]
    account = {"account": ref("Account")}
    new_key = {
        SHOWN_ONCE: {
            "type": "string",
            "pattern": "^cg_",
            "description": "The key's secret: in the first answer only, never in a replay.",
        },
        "keyId": {"type": "string"},
    }
    return {
        "/admin/accounts": {
            "post": admin_operation(
                "Create an account holding its tier's credits, and its first API key",
                shown_once(
                    ok("create", {**account, **new_key}, 201, "Created; apiKey is shown once.")
                ),
                body=json_body(
                    {
                        "id": ACCOUNT_ID,
                        "email": {
                            "type": "string",
                            "format": "email",
                            "maxLength": validation.MAX_EMAIL,
                        },
                        "tier": ref("Tier"),
                        "months": {**MONTHS, "description": "Subscription length; paid tiers."},
                        "reason": REASON,
                    },
                    optional=True,
                ),
                writes=True,
            ),
            "get": admin_operation(
                "List accounts in the store, by id",
                ok(
                    "list",
                    {
                        "accounts": {"type": "array", "items": ref("AccountRow")},
                        "next": {"type": ["string", "null"]},
                    },
                ),
                params=[
                    PAGE_SIZE,
                    query("after", ACCOUNT_ID, "The previous page's next."),
                ],
            ),
        },
        "/admin/accounts/{id}": {
            "get": admin_operation(
                "The account's full status: usage, email, keys (no secrets)",
                ok("show", account),
                404,
                params=acct,
            )
        },
        "/admin/accounts/{id}/keys": {
            "post": admin_operation(
                "A new API key (shown once), with its own limits",
                shown_once(
                    ok(
                        "key",
                        {**new_key, "prefix": {"type": "string"}, "key": ref("Key")},
                        201,
                        "Created.",
                    )
                ),
                404,
                body={
                    "required": False,
                    "content": {"application/json": {"schema": ref("NewKey")}},
                },
                params=acct,
                writes=True,
            ),
            "get": admin_operation(
                "The account's keys, revoked ones included",
                ok("keys", {"keys": {"type": "array", "items": ref("Key")}}),
                404,
                params=acct,
            ),
        },
        "/admin/accounts/{id}/keys/{keyId}": {
            "patch": admin_operation(
                "Change a key's name or limits: only the fields given, null removes a limit; "
                "on every replica within 1 s (a revoked key: 409)",
                ok("changed", {"key": ref("Key")}),
                404,
                409,
                body={
                    "required": True,
                    "content": {"application/json": {"schema": ref("KeyChanges")}},
                },
                params=[*acct, path_param("keyId", KEY_ID)],
                writes=True,
            ),
            "delete": admin_operation(
                "Revoke a key: it stops working on every replica within 1 s (idempotent)",
                ok("revoked", {"key": ref("Key")}),
                404,
                params=[*acct, path_param("keyId", KEY_ID)],
                writes=True,
            ),
        },
        "/admin/accounts/{id}/upgrade": {
            "post": admin_operation(
                "Subscribe to a paid tier: plan credits = its allowance, ends now + months",
                ok("upgraded", account),
                404,
                body=json_body(
                    {"tier": ref("PaidTier"), "months": MONTHS, "reason": REASON},
                    ["tier", "months"],
                ),
                params=acct,
                writes=True,
            )
        },
        "/admin/accounts/{id}/downgrade": {
            "post": admin_operation(
                "Back to free: plan credits = min(current, free allowance); bonus kept",
                ok("downgraded", account),
                404,
                body=json_body({"reason": REASON}, optional=True),
                params=acct,
                writes=True,
            )
        },
        "/admin/accounts/{id}/renew": {
            "post": admin_operation(
                "Extend the subscription by months from max(now, current end)",
                ok("renewed", account),
                404,
                409,
                body=json_body({"months": MONTHS, "reason": REASON}, ["months"]),
                params=acct,
                writes=True,
            )
        },
        "/admin/accounts/{id}/grant": {
            "post": admin_operation(
                "Add bonus credits (never reset monthly)",
                ok("granted", account),
                404,
                body=json_body(
                    {
                        "credits": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": validation.MAX_CREDITS,
                        },
                        "reason": REASON,
                    },
                    ["credits", "reason"],
                ),
                params=acct,
                writes=True,
            )
        },
        "/admin/usage/history": {
            "get": history_operation(
                "Usage across accounts (or one: ?account=) per UTC day, route, key or account",
                "adminToken",
                ["day", "route", "key", "account"],
                None,
                ACCOUNT_FILTER,
            )
        },
        "/admin/usage/top": {
            "get": history_operation(
                "The accounts that spent the most credits in a range",
                "adminToken",
                ["account"],
                "accountId",
                query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "How many."),
            )
        },
        "/admin/usage/ledger": {
            "get": ledger_range_operation(
                "Credit movements of every account (or one) in a range",
                "adminToken",
                ACCOUNT_FILTER,
            )
        },
        "/admin/accounts/{id}/ledger": {
            "get": admin_operation(
                "Credit movements from the store of record, newest first",
                ok(
                    "ledger",
                    {
                        "entries": {"type": "array", "items": ref("LedgerEntry")},
                        "next": {"type": ["string", "null"], "description": "Cursor: ?before="},
                    },
                ),
                404,
                params=[
                    *acct,
                    PAGE_SIZE,
                    query(
                        "before",
                        {"type": "string", "pattern": validation.LEDGER_CURSOR.pattern},
                        "The previous page's next.",
                    ),
                ],
            )
        },
    }
