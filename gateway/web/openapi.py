"""The OpenAPI 3.1 document of the whole HTTP surface, served at ``GET /openapi.json``.

Built from the settings, so the tiers of the TOML file and the configured proxied prefixes
appear in it. Kept true by tests: every route of the app is documented, and the admin API
answers only documented statuses and shapes (a schemathesis fuzz on a real server).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as WebRoute

from gateway.accounts import keyfields, validation
from gateway.errors import openai_names
from gateway.openapi import (
    TIME,
    Schema,
    error_refs,
    history_operation,
    json_content,
    ledger_range_operation,
    ok,
    ref,
)
from gateway.settings import ErrorStyle, Route, Settings

ERROR_CODES = {
    400: ("invalid_request", "Bad JSON or fields; the message names the field and the problem."),
    401: (
        "unauthorized",
        "No, unknown or revoked key / token (key_expired: the key is past its expiresAt).",
    ),
    403: ("forbidden", "The key may not do this: a key with its own limits cannot manage keys."),
    404: ("not_found", "No such account, key or path."),
    405: ("method_not_allowed", "The path exists, the method does not."),
    409: (
        "conflict",
        "Duplicate id, renewing an account with no subscription, changing a revoked key, or an "
        "Idempotency-Key whose first request is still running.",
    ),
    413: ("payload_too_large", "The body is larger than 64 KiB; the rest was not read."),
    414: (
        "uri_too_long",
        "The request line is longer than CREDITGATE_MAX_REQUEST_LINE bytes; answered before "
        "authentication, then the connection is closed.",
    ),
    422: ("idempotency_mismatch", "The Idempotency-Key was used for another request."),
    429: ("insufficient_credits", "The account cannot pay (or rate_limited: over its rate)."),
    431: (
        "request_header_fields_too_large",
        "More header lines than CREDITGATE_MAX_HEADERS or more header bytes than "
        "CREDITGATE_MAX_HEADER_BYTES; answered before authentication, then the connection is "
        "closed.",
    ),
    502: ("bad_gateway", "The backend could not be reached; the reservation was refunded."),
    503: ("unavailable", "Admin disabled (no CREDITGATE_ADMIN_TOKEN) or a backing service down."),
    504: ("gateway_timeout", "The backend did not answer in time; refunded."),
}


KEY_LIMITS: Schema = {
    "expiresAt": {
        **TIME,
        "description": "When the key stops working (401 key_expired); null: never.",
    },
    "creditLimit": {
        "type": ["integer", "null"],
        "minimum": 0,
        "maximum": keyfields.MAX_CREDIT_LIMIT,
        "description": "Credits the key may spend (held or charged) in one monthly period of "
        "its account (429 key_credit_limit); null: the account's credits only.",
    },
    "requestsPerMinute": {
        "type": ["integer", "null"],
        "minimum": keyfields.MIN_RPM,
        "maximum": keyfields.MAX_RPM,
        "description": "The key's own request rate (429 key_rate_limited); null: the tier's.",
    },
    "routes": {
        "type": ["array", "null"],
        "minItems": 1,
        "maxItems": keyfields.MAX_ROUTES,
        "items": {"type": "string", "pattern": "^/", "maxLength": keyfields.MAX_ROUTE},
        "description": "Path prefixes the key may call ('/v1' allows /v1 and /v1/...; 403 "
        "route_not_allowed elsewhere), each under a proxied route; null: every route.",
    },
}
"""A key's own limits as a key's answers show them (null: that one does not limit)."""

KEY_FIELDS: Schema = {
    "name": {
        "type": ["string", "null"],
        "maxLength": validation.MAX_KEY_NAME,
        "pattern": r"^[^\x00-\x1f\x7f]*$",
    },
    **KEY_LIMITS,
    "expiresAt": {
        **KEY_LIMITS["expiresAt"],
        "description": "ISO 8601 with a zone (Z or an offset), in the future; null: never.",
    },
}
"""What a request may set of a key (gateway.accounts.keyfields)."""


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
        "OpenAIError": {
            "description": 'The gateway\'s own errors on a route with errors = "openai": '
            "OpenAI's shape, so OpenAI SDKs show the message (same status and headers).",
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": "null"},
                        "code": {"type": "string"},
                    },
                },
            },
        },
        "Usage": {"type": "object", "required": list(usage), "properties": usage},
        "Key": {
            "type": "object",
            "required": [
                "id",
                "prefix",
                "name",
                "createdAt",
                "revokedAt",
                "lastUsedAt",
                *KEY_LIMITS,
            ],
            "properties": {
                "id": {"type": "string"},
                "prefix": {"type": "string", "description": "The key's first characters."},
                "name": {"type": ["string", "null"]},
                "createdAt": {"type": "string", "format": "date-time"},
                "revokedAt": TIME,
                "lastUsedAt": TIME,
                **KEY_LIMITS,
                "creditsSpent": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Only on a key with a creditLimit: the credits it has "
                    "spent (held or charged) in its account's current monthly period, as the "
                    "limit counts them.",
                },
            },
        },
        "NewKey": {
            "description": "A new key's name and own limits; absent or null: no limit.",
            "type": "object",
            "additionalProperties": False,
            "properties": KEY_FIELDS,
        },
        "KeyChanges": {
            "description": "Only the fields given change; null removes that limit.",
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": KEY_FIELDS,
        },
        "Account": {
            "description": "The usage object plus the account's id (and, in full reports, "
            "email, createdAt and keys, never a key's secret or hash).",
            "allOf": [
                ref("Usage"),
                {
                    "type": "object",
                    "required": ["id"],
                    "properties": {
                        "id": {"type": "string"},
                        "email": {"type": ["string", "null"]},
                        "createdAt": TIME,
                        "keys": {"type": "array", "items": ref("Key")},
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
                "heldCredits": {
                    "type": "integer",
                    "description": "charge and refund: the credits the request held (a "
                    "request has one row, when settled; older ledgers also have a 'hold' row)",
                },
                "accountId": {"type": "string"},
                "requestId": {"type": ["string", "null"]},
                "route": {
                    "type": ["string", "null"],
                    "description": "The route prefix of the request that caused it, if any",
                },
                "keyId": {
                    "type": ["string", "null"],
                    "description": "The API key of the request that caused it, if any",
                },
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


def _public_paths(settings: Settings) -> dict[str, Schema]:
    paths: dict[str, Schema] = {
        "/api/user/usage": {
            "get": {
                "tags": ["user"],
                "summary": "The caller's credits and usage; costs nothing",
                "security": [{"apiKey": []}],
                "responses": {
                    **ok("usage", {"usage": ref("Usage")}),
                    **error_refs(401, 503),
                },
            }
        },
        "/api/user/usage/history": {
            "get": history_operation(
                "The caller's usage per UTC day, route or key, from the store of record",
                "apiKey",
                ["day", "route", "key"],
                None,
            )
        },
        "/api/user/ledger": {
            "get": ledger_range_operation("The caller's credit movements in a range", "apiKey")
        },
        **_user_key_paths(),
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "summary": "Liveness",
                "responses": {"200": json_content({"type": "object"}, "The process runs.")},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["operations"],
                "summary": "Readiness: Redis and the store answer",
                "responses": {
                    "200": json_content({"type": "object"}, "Ready."),
                    **error_refs(503),
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
                "responses": {"200": json_content({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
    }
    for route in settings.routes:
        paths[route.prefix.rstrip("/") + "/{path}"] = _proxied(route)
    return paths


def _user_key_paths() -> dict[str, Schema]:
    """The account holder's own keys (gateway.web.keys)."""
    key_id = {
        "name": "keyId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": validation.KEY_ID.pattern},
    }

    def operation(
        summary: str, responses: Schema, *statuses: int, body: str | None = None, keyed: bool
    ) -> Schema:
        op: Schema = {
            "tags": ["user"],
            "summary": summary,
            "security": [{"apiKey": []}],
            "responses": {**responses, **error_refs(*statuses, 401, 503)},
        }
        if body is not None:
            content = {"application/json": {"schema": ref(body)}}
            op["requestBody"] = {"required": body == "KeyChanges", "content": content}
        if keyed:
            op["parameters"] = [key_id]
        return op

    one_key = ok("key", {"key": ref("Key")})
    new_key = {
        "apiKey": {"type": "string", "pattern": "^cg_", "description": "Shown this once."},
        "keyId": {"type": "string"},
        "prefix": {"type": "string"},
        "key": ref("Key"),
    }
    limited = "; not for a key with limits of its own (403)"
    return {
        "/api/user/keys": {
            "get": operation(
                "The caller's account's keys, revoked ones included (no secrets)",
                ok("keys", {"keys": {"type": "array", "items": ref("Key")}}),
                keyed=False,
            ),
            "post": operation(
                f"A new key of the caller's account, its secret shown once{limited}",
                ok("created", new_key, 201, "Created; apiKey is shown this once."),
                400,
                403,
                404,
                413,
                body="NewKey",
                keyed=False,
            ),
        },
        "/api/user/keys/{keyId}": {
            "patch": operation(
                "Change a key's name or limits (null removes one; on every replica within "
                f"1 s){limited}",
                one_key,
                400,
                403,
                404,
                409,
                413,
                body="KeyChanges",
                keyed=True,
            ),
            "delete": operation(
                f"Revoke a key, the caller's own too (on every replica within 1 s){limited}",
                one_key,
                400,
                403,
                404,
                keyed=True,
            ),
        },
    }


HEADERS: dict[str, Schema] = {
    "X-Request-Id": {"description": "The gateway's id of this call (also sent upstream)."},
    "X-Credits-Remaining": {"description": "Credits left after this call.", "int": True},
    "X-Credits-Charged": {
        "description": "Credits charged for this call (0: refunded).",
        "int": True,
    },
    "X-Tokens-Used": {"description": "Tokens the backend reported (or the estimate).", "int": True},
    "RateLimit": {
        "description": 'Quotas left: "credits";r=..;t=.., "minute";r=..;t=.. (a key with '
        'limits of its own: also "key-credits" and "key-minute")'
    },
    "RateLimit-Policy": {
        "description": 'The quotas: "credits";q=..;w=2592000, "minute";q=..;w=60 (a key '
        'with limits of its own: also "key-credits";q=..;w=2592000 and "key-minute";q=..;w=60)'
    },
    "Retry-After": {"description": "Seconds until a retry could pass.", "int": True},
    "X-Should-Retry": {
        "description": "false: credits (wait for the period end or buy more); true: rate."
    },
    "Idempotent-Replayed": {
        "description": "true: an earlier attempt with this key was charged; this answer is "
        "its first answer again (2xx), or a 409 when that answer was not kept."
    },
    "WWW-Authenticate": {"description": "Bearer"},
}
"""Every header the gateway sets on a proxied call's answer, described once."""


def _headers(*names: str, optional: tuple[str, ...] = ()) -> Schema:
    """Header objects for an answer: ``names`` always sent, ``optional`` when they apply."""
    return {
        name: {
            "description": HEADERS[name]["description"],
            "required": name not in optional,
            "schema": {"type": "integer"} if HEADERS[name].get("int") else {"type": "string"},
        }
        for name in (*names, *optional)
    }


CREDIT_HEADERS = ("X-Credits-Remaining", "X-Credits-Charged", "X-Request-Id")
RATE_HEADERS = ("RateLimit", "RateLimit-Policy")


def _answer(description: str, schema: Schema | None, *headers: str, **more: Any) -> Schema:
    answer: Schema = {"description": description, "headers": _headers(*headers, **more)}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    return answer


def _error(*codes: str, style: ErrorStyle = "creditgate", status: int = 400) -> Schema:
    """An error body naming ``codes``: the contract's, or OpenAI's shape (its type and code)."""
    if style == "openai":
        names = [openai_names(status, code) for code in codes]
        inner = {
            "type": {"enum": sorted({kind for kind, _ in names})},
            "code": {"enum": [code for _, code in names]},
        }
        return {"allOf": [ref("OpenAIError")], "properties": {"error": {"properties": inner}}}
    return {
        "allOf": [ref("Error")],
        "properties": {"error": {"enum": list(codes)}},
    }


def _proxied(route: Route) -> Schema:
    """A proxied prefix: any method, body and query, passed to the backend as they are."""
    prefix, style = route.prefix, route.errors
    if route.pricing == "tokens":
        price = (
            f"Metered: holds up to {route.max_credits} credit(s) (less when the JSON body names "
            "max_tokens or max_completion_tokens: ceil(n / 2000), or all the account has when "
            f"that is less but at least {route.cost}), charges ceil(tokens / 2000) of the tokens "
            f"the backend reported (at least {route.cost}, never more than held; no tokens "
            "reported: the hold) only on a 2xx answer, and gives the rest back. A JSON answer's "
            "X-Credits-Charged and creditInfo show the charge; a streamed answer's headers, "
            "sent before its tokens are known, show the hold"
        )
    else:
        price = f"Costs {route.cost} credit(s), charged only on a 2xx answer"
    description = (
        f"Proxied to the backend of {prefix} (every method, body and query passed through, "
        f"responses streamed). {price}; a JSON object body gains creditInfo. Idempotency-Key "
        "honoured: a retry with the same key is charged once and replays the first answer."
    )
    if style == "openai":
        description += (
            ' The gateway\'s own errors here are in OpenAI\'s shape, {"error": {"message", '
            '"type", "param", "code"}} (insufficient_credits: type and code '
            "insufficient_quota; rate_limited: type requests, code rate_limit_exceeded; "
            "unauthorized: code invalid_api_key), with the same statuses and headers."
        )

    def error(status: int, *codes: str) -> Schema:
        return _error(*codes, style=style, status=status)

    insufficient = {
        "allOf": [error(429, "insufficient_credits", "key_credit_limit")],
        "required": ["creditInfo"],
        "properties": {"creditInfo": ref("CreditInfo")},
    }
    responses: Schema = {
        "2XX": _answer(
            "The backend's answer; charged. Or, for a retry of an Idempotency-Key whose first "
            "attempt was charged with a JSON answer (up to CREDITGATE_REPLAY_MAX_BYTES), that "
            "first answer again, byte for byte, with its headers, X-Credits-Charged: 0 and "
            "Idempotent-Replayed: true: not forwarded, not charged.",
            None,
            *CREDIT_HEADERS,
            *RATE_HEADERS,
            optional=("X-Tokens-Used", "Idempotent-Replayed"),
        ),
        "default": _answer(
            "The backend's non-2xx answer, as it sent it; refunded (X-Credits-Charged: 0).",
            None,
            *CREDIT_HEADERS,
            *RATE_HEADERS,
            optional=("X-Tokens-Used",),
        ),
        "400": _answer(
            "A malformed Idempotency-Key.", error(400, "invalid_request"), "X-Request-Id"
        ),
        "401": _answer(
            "No, unknown or revoked key (unauthorized), or a key past its own expiresAt "
            "(key_expired).",
            error(401, "unauthorized", "key_expired"),
            "X-Request-Id",
            "WWW-Authenticate",
        ),
        "403": _answer(
            "route_not_allowed: the path is outside the routes the key may call. The backend "
            "was not called; nothing was charged.",
            error(403, "route_not_allowed"),
            "X-Request-Id",
            *RATE_HEADERS,
        ),
        "409": _answer(
            "A retry of an Idempotency-Key whose first attempt is in flight (retry later), or "
            "was charged with an answer that was not kept (streamed, not JSON, or larger than "
            "CREDITGATE_REPLAY_MAX_BYTES: Idempotent-Replayed: true), or failed 8 times.",
            error(409, "conflict"),
            "X-Request-Id",
            "X-Credits-Charged",
            *RATE_HEADERS,
            optional=("Idempotent-Replayed",),
        ),
        "422": _answer(
            "The Idempotency-Key was first used for another request (method, path, query or "
            "body); nothing forwarded, nothing charged.",
            error(422, "idempotency_mismatch"),
            "X-Request-Id",
        ),
        "429": _answer(
            "insufficient_credits: the account cannot pay (X-Should-Retry: false, Retry-After "
            "seconds to the period end, creditInfo); rate_limited: over the tier's requests per "
            "minute (X-Should-Retry: true, Retry-After seconds until a call would pass); "
            "key_credit_limit and key_rate_limited: the same for the key's own creditLimit and "
            "requestsPerMinute. The backend was not called; nothing was charged.",
            {"oneOf": [insufficient, error(429, "rate_limited", "key_rate_limited")]},
            "X-Request-Id",
            "Retry-After",
            "X-Should-Retry",
            *RATE_HEADERS,
        ),
        "502": _answer(
            "The backend could not be reached or broke off; refunded.",
            error(502, "bad_gateway"),
            *CREDIT_HEADERS,
            "X-Tokens-Used",
            *RATE_HEADERS,
        ),
        "503": _answer(
            "Redis or the store cannot be reached; nothing was charged.",
            error(503, "unavailable"),
            "X-Request-Id",
        ),
        "504": _answer(
            "The backend did not answer in time; refunded.",
            error(504, "gateway_timeout"),
            *CREDIT_HEADERS,
            "X-Tokens-Used",
            *RATE_HEADERS,
        ),
    }
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
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "A retry with the same key within 24 h is charged once, and "
                "gets the first answer again when it was kept (see 2XX, 409, 422).",
            },
        ],
        "responses": responses,
    }
    methods = ("get", "post", "put", "patch", "delete")
    return {
        m: {**op, "operationId": f"proxy_{prefix.strip('/').replace('/', '_')}_{m}"}
        for m in methods
    }


def openapi_document(settings: Settings, other_paths: Mapping[str, Schema]) -> Schema:
    """The document: the public paths, then ``other_paths`` (the admin API's, given by the app)."""
    tiers = sorted(settings.tiers)
    responses = {
        f"E{status}": json_content(ref("Error"), f"{code}: {text}")
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
        "paths": _with_head_refusals({**_public_paths(settings), **other_paths}),
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


METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _with_head_refusals(paths: Mapping[str, Schema]) -> dict[str, Schema]:
    """Every operation with 414 and 431: any request may be refused for its head (the server's
    ``gateway.heads``), before a route is chosen."""
    refusals = error_refs(414, 431)
    return {
        path: {
            key: {**op, "responses": {**op["responses"], **refusals}} if key in METHODS else op
            for key, op in item.items()
        }
        for path, item in paths.items()
    }


def openapi_route(other_paths: Mapping[str, Schema]) -> WebRoute:
    """``GET /openapi.json``, no auth; the document of the app's settings, built once."""
    cache: dict[int, Schema] = {}

    async def openapi_json(request: Request) -> Response:
        state = request.app.state
        settings: Settings = getattr(state, "settings", None) or state.services.settings
        document = cache.get(id(settings))
        if document is None:
            document = cache[id(settings)] = openapi_document(settings, other_paths)
        return JSONResponse(document)

    return WebRoute("/openapi.json", openapi_json, methods=["GET"])
