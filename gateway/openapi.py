"""The OpenAPI 3.1 document of the whole HTTP surface, served at ``GET /openapi.json``.

Built from the settings, so the tiers of the TOML file and the configured proxied prefixes
appear in it. Kept true by tests: every route of the app is documented, and the admin API
answers only documented statuses and shapes (a schemathesis fuzz on a real server).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admin import validation
from gateway.settings import Settings

Schema = dict[str, Any]

ACCOUNT_ID: Schema = {
    "type": "string",
    "pattern": validation.ACCOUNT_ID.pattern,
    "maxLength": 64,
}
KEY_ID: Schema = {"type": "string", "pattern": validation.KEY_ID.pattern}
MONTHS: Schema = {"type": "integer", "minimum": validation.MIN_MONTHS, "maximum": 36}
TEXT_LINE = r"^[^\x00-\x1f\x7f]*$"
"""Free text: no control characters (the store refuses NUL)."""
REASON: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 500,
    "pattern": r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$",
}
TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
ERROR_CODES = {
    400: ("invalid_request", "Bad JSON or fields; the message names the field and the problem."),
    401: ("unauthorized", "No, unknown or revoked key / token."),
    404: ("not_found", "No such account, key or path."),
    405: ("method_not_allowed", "The path exists, the method does not."),
    409: ("conflict", "Duplicate id, or renewing an account with no subscription."),
    429: ("insufficient_credits", "The account cannot pay, or is over its request rate."),
    502: ("bad_gateway", "The backend could not be reached; the reservation was refunded."),
    503: ("unavailable", "Admin disabled (no CREDITGATE_ADMIN_TOKEN) or a backing service down."),
    504: ("gateway_timeout", "The backend did not answer in time; refunded."),
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _ok(name: str, fields: Schema, status: int = 200, description: str = "Done.") -> Schema:
    schema = {
        "type": "object",
        "required": ["success", *fields],
        "properties": {"success": {"const": True}, **fields},
    }
    return {str(status): _json(schema, description)}


def _body(
    properties: Schema, required: list[str] | None = None, *, optional: bool = False
) -> Schema:
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = required
    return {"required": not optional, "content": {"application/json": {"schema": schema}}}


def _admin(
    summary: str,
    responses: dict[str, Schema],
    *errors: int,
    body: Schema | None = None,
    params: list[Schema] | None = None,
) -> Schema:
    op: Schema = {
        "tags": ["admin"],
        "summary": summary,
        "security": [{"adminToken": []}],
        "responses": {**responses, **_errors(400, 401, *errors, 503)},
    }
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _schemas(tiers: list[str]) -> dict[str, Schema]:
    usage = {
        "accountId": {"type": "string"},
        "credits": {"type": "integer", "description": "Plan credits."},
        "bonusCredits": {"type": "integer"},
        "creditsRemaining": {"type": "integer", "description": "credits + bonusCredits"},
        "monthlyCredits": {"type": "integer", "description": "The tier's monthly allowance."},
        "totalTokensUsed": {"type": "integer"},
        "monthlyTokensUsed": {"type": "integer"},
        "monthlyResetDate": {"type": "string", "format": "date-time"},
        "isSubscribed": {"type": "boolean"},
        "subscriptionTier": {"type": "string"},
        "subscriptionEndsAt": TIME,
        "requestsPerMinute": {"type": "integer", "description": "0: no rate limit."},
    }
    return {
        "Error": {
            "type": "object",
            "required": ["success", "error", "message"],
            "properties": {
                "success": {"const": False},
                "error": {"type": "string"},
                "message": {"type": "string"},
            },
        },
        "Usage": {"type": "object", "required": list(usage), "properties": usage},
        "Key": {
            "type": "object",
            "required": ["id", "prefix", "name", "createdAt", "revokedAt", "lastUsedAt"],
            "properties": {
                "id": {"type": "string"},
                "prefix": {"type": "string", "description": "The key's first characters."},
                "name": {"type": ["string", "null"]},
                "createdAt": {"type": "string", "format": "date-time"},
                "revokedAt": TIME,
                "lastUsedAt": TIME,
            },
        },
        "Account": {
            "description": "The usage object plus the account's id (and, in full reports, "
            "email, createdAt and keys, never a key's secret or hash).",
            "allOf": [
                _ref("Usage"),
                {
                    "type": "object",
                    "required": ["id"],
                    "properties": {
                        "id": {"type": "string"},
                        "email": {"type": ["string", "null"]},
                        "createdAt": TIME,
                        "keys": {"type": "array", "items": _ref("Key")},
                    },
                },
            ],
        },
        "AccountRow": {
            "type": "object",
            "required": ["id", "email", "tier", "createdAt"],
            "properties": {
                "id": {"type": "string"},
                "email": {"type": ["string", "null"]},
                "tier": {"type": "string"},
                "createdAt": {"type": "string", "format": "date-time"},
            },
        },
        "LedgerEntry": {
            "type": "object",
            "required": ["id", "kind", "credits", "tokens", "at"],
            "properties": {
                "id": {"type": "string", "description": "Event id; the paging cursor."},
                "kind": {
                    "type": "string",
                    "enum": [
                        "open",
                        "hold",
                        "charge",
                        "refund",
                        "grant",
                        "reset",
                        "expire",
                        "upgrade",
                        "renew",
                        "downgrade",
                        "restore",
                    ],
                },
                "credits": {"type": "integer", "description": "planCredits + bonusCredits"},
                "planCredits": {"type": "integer"},
                "bonusCredits": {"type": "integer"},
                "tokens": {"type": "integer"},
                "requestId": {"type": ["string", "null"]},
                "reason": {"type": ["string", "null"]},
                "version": {"type": "integer"},
                "at": {"type": "string", "format": "date-time"},
            },
        },
        "CreditInfo": {
            "type": "object",
            "required": ["tokensUsed", "creditsRemaining", "totalTokensUsed"],
            "properties": {
                "tokensUsed": {"type": "integer"},
                "creditsRemaining": {"type": "integer"},
                "totalTokensUsed": {"type": "integer"},
            },
        },
        "Tier": {"type": "string", "enum": tiers},
        "PaidTier": {"type": "string", "enum": [t for t in tiers if t != "free"]},
    }


def _admin_paths() -> dict[str, Schema]:
    acct = [_path_param("id", ACCOUNT_ID)]
    account = {"account": _ref("Account")}
    new_key = {"apiKey": {"type": "string", "pattern": "^cg_"}, "keyId": {"type": "string"}}
    return {
        "/admin/accounts": {
            "post": _admin(
                "Create an account holding its tier's credits, and its first API key",
                _ok("create", {**account, **new_key}, 201, "Created; apiKey is shown once."),
                409,
                body=_body(
                    {
                        "id": ACCOUNT_ID,
                        "email": {"type": "string", "format": "email", "maxLength": 254},
                        "tier": _ref("Tier"),
                        "months": {**MONTHS, "description": "Subscription length; paid tiers."},
                        "reason": REASON,
                    },
                    optional=True,
                ),
            ),
            "get": _admin(
                "List accounts in the store, by id",
                _ok(
                    "list",
                    {
                        "accounts": {"type": "array", "items": _ref("AccountRow")},
                        "next": {"type": ["string", "null"]},
                    },
                ),
                params=[
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 200}, "Page size."
                    ),
                    _query("after", ACCOUNT_ID, "The previous page's next."),
                ],
            ),
        },
        "/admin/accounts/{id}": {
            "get": _admin(
                "The account's full status: usage, email, keys (no secrets)",
                _ok("show", account),
                404,
                params=acct,
            )
        },
        "/admin/accounts/{id}/keys": {
            "post": _admin(
                "A new API key (shown once)",
                _ok("key", {**new_key, "prefix": {"type": "string"}}, 201, "Created."),
                404,
                body=_body(
                    {"name": {"type": "string", "maxLength": 100, "pattern": TEXT_LINE}},
                    optional=True,
                ),
                params=acct,
            ),
            "get": _admin(
                "The account's keys, revoked ones included",
                _ok("keys", {"keys": {"type": "array", "items": _ref("Key")}}),
                404,
                params=acct,
            ),
        },
        "/admin/accounts/{id}/keys/{keyId}": {
            "delete": _admin(
                "Revoke a key: it stops working on every replica within 1 s (idempotent)",
                _ok("revoked", {"key": _ref("Key")}),
                404,
                params=[*acct, _path_param("keyId", KEY_ID)],
            )
        },
        "/admin/accounts/{id}/upgrade": {
            "post": _admin(
                "Subscribe to a paid tier: plan credits = its allowance, ends now + months",
                _ok("upgraded", account),
                404,
                body=_body(
                    {"tier": _ref("PaidTier"), "months": MONTHS, "reason": REASON},
                    ["tier", "months"],
                ),
                params=acct,
            )
        },
        "/admin/accounts/{id}/downgrade": {
            "post": _admin(
                "Back to free: plan credits = min(current, free allowance); bonus kept",
                _ok("downgraded", account),
                404,
                body=_body({"reason": REASON}, optional=True),
                params=acct,
            )
        },
        "/admin/accounts/{id}/renew": {
            "post": _admin(
                "Extend the subscription by months from max(now, current end)",
                _ok("renewed", account),
                404,
                409,
                body=_body({"months": MONTHS, "reason": REASON}, ["months"]),
                params=acct,
            )
        },
        "/admin/accounts/{id}/grant": {
            "post": _admin(
                "Add bonus credits (never reset monthly)",
                _ok("granted", account),
                404,
                body=_body(
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
            )
        },
        "/admin/accounts/{id}/ledger": {
            "get": _admin(
                "Credit movements from the store of record, newest first",
                _ok(
                    "ledger",
                    {
                        "entries": {"type": "array", "items": _ref("LedgerEntry")},
                        "next": {"type": ["string", "null"], "description": "Cursor: ?before="},
                    },
                ),
                404,
                params=[
                    *acct,
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 200}, "Page size."
                    ),
                    _query(
                        "before",
                        {"type": "string", "pattern": validation.LEDGER_CURSOR.pattern},
                        "The previous page's next.",
                    ),
                ],
            )
        },
    }


def _public_paths(settings: Settings) -> dict[str, Schema]:
    paths: dict[str, Schema] = {
        "/api/user/usage": {
            "get": {
                "tags": ["user"],
                "summary": "The caller's credits and usage; costs nothing",
                "security": [{"apiKey": []}],
                "responses": {
                    **_ok("usage", {"usage": _ref("Usage")}),
                    **_errors(401, 503),
                },
            }
        },
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "summary": "Liveness",
                "responses": {"200": _json({"type": "object"}, "The process runs.")},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["operations"],
                "summary": "Readiness: Redis and the store answer",
                "responses": {
                    "200": _json({"type": "object"}, "Ready."),
                    **_errors(503),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["operations"],
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["operations"],
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
    }
    for route in settings.routes:
        paths[route.prefix.rstrip("/") + "/{path}"] = _proxied(route.prefix, route.cost)
    return paths


def _proxied(prefix: str, cost: int) -> Schema:
    """A proxied prefix: any method, body and query, passed to the backend as they are."""
    description = (
        f"Proxied to the backend of {prefix} (every method, body and query passed through, "
        f"responses streamed). Costs {cost} credit(s), charged only on a 2xx answer; a JSON "
        "object body gains creditInfo. Headers: X-Credits-Remaining, X-Credits-Charged, "
        "X-Tokens-Used, X-Request-Id, RateLimit, RateLimit-Policy; Idempotency-Key honoured."
    )
    op: Schema = {
        "tags": ["proxied"],
        "summary": f"Anything under {prefix}",
        "description": description,
        "security": [{"apiKey": []}],
        "parameters": [
            {
                "name": "path",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "The rest of the path, slashes included.",
            }
        ],
        "responses": {
            "2XX": {"description": "The backend's answer; charged."},
            "default": {"description": "The backend's non-2xx answer; refunded."},
            **_errors(401, 429, 502, 504),
        },
    }
    methods = ("get", "post", "put", "patch", "delete")
    return {
        m: {**op, "operationId": f"proxy_{prefix.strip('/').replace('/', '_')}_{m}"}
        for m in methods
    }


def openapi_document(settings: Settings) -> Schema:
    tiers = sorted(settings.tiers)
    responses = {
        f"E{status}": _json(_ref("Error"), f"{code}: {text}")
        for status, (code, text) in ERROR_CODES.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "creditgate",
            "version": "1.0.0",
            "description": "A credit gateway in front of code-generation and review backends. "
            "Errors are JSON: {success: false, error, message}.",
        },
        "paths": {**_public_paths(settings), **_admin_paths()},
        "components": {
            "schemas": _schemas(tiers),
            "responses": responses,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "CREDITGATE_ADMIN_TOKEN",
                },
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An account's API key (cg_...)",
                },
            },
        },
    }


def openapi_route() -> Route:
    """``GET /openapi.json``, no auth; the document of the app's settings, built once."""
    cache: dict[int, Schema] = {}

    async def openapi_json(request: Request) -> Response:
        state = request.app.state
        settings: Settings = getattr(state, "settings", None) or state.services.settings
        document = cache.get(id(settings))
        if document is None:
            document = cache[id(settings)] = openapi_document(settings)
        return JSONResponse(document)

    return Route("/openapi.json", openapi_json, methods=["GET"])
