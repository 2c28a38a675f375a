"""The errors creditgate raises on purpose, and their one mapping to HTTP answers.

    CreditgateError                 code, status, message
    ├── InvalidRequest              400 invalid_request: bad JSON or fields, says which
    ├── Unauthorized                401 unauthorized: no, unknown or revoked key / token
    │   └── KeyExpired              401 key_expired: a key past its own ``expiresAt``
    ├── Forbidden                   403 forbidden: the key may not do this (its own limits)
    ├── NotFound                    404 not_found
    ├── MethodNotAllowed            405 method_not_allowed
    ├── Conflict                    409 conflict
    ├── PayloadTooLarge             413 payload_too_large: a body past its limit (unread rest)
    ├── IdempotencyMismatch         422 idempotency_mismatch: a key reused for another request
    ├── AdminDisabled               503 admin_disabled: no CREDITGATE_ADMIN_TOKEN
    └── Unavailable                 503 unavailable: Redis or the store cannot be reached

Third-party errors (redis-py, SQLAlchemy) are converted once, where they are raised, with
``raise ... from exc`` (the store's own ``StoreError`` becomes ``Unavailable`` in
``gateway.accounts.stored``). ``answer`` is the one place an error becomes an HTTP answer: the
web app's and the admin API's exception handlers and the proxy's plain-ASGI refusals all use
it. The 429s and upstream failures of the proxy are answers, not errors: the proxy builds them
itself with ``error_body``.

On a proxied route that says ``errors = "openai"``, the same errors take OpenAI's shape
(``openai_error_body``): ``{"error": {"message", "type", "param", "code"}}``, so the OpenAI
SDKs show the message and read the code; status and headers stay as they are.

    gateway code                OpenAI type             OpenAI code
    unauthorized (401)          invalid_request_error   invalid_api_key
    insufficient_credits (429)  insufficient_quota      insufficient_quota
    rate_limited (429)          requests                rate_limit_exceeded
    key_credit_limit (429)      insufficient_quota      key_credit_limit
    key_rate_limited (429)      requests                key_rate_limited
    any other, 403              permission_error        the gateway's code
    any other, 5xx              server_error            the gateway's code
    any other 4xx               invalid_request_error   the gateway's code
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("creditgate.errors")

UNAVAILABLE_MESSAGE = "a backing service is unavailable; retry later"
"""What a caller is told of an ``Unavailable``: hosts and driver messages go to the log only."""


class CreditgateError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


class InvalidRequest(CreditgateError):
    code, status = "invalid_request", 400


class Unauthorized(CreditgateError):
    code, status = "unauthorized", 401


class KeyExpired(Unauthorized):
    code = "key_expired"


class Forbidden(CreditgateError):
    code, status = "forbidden", 403


class NotFound(CreditgateError):
    code, status = "not_found", 404


class MethodNotAllowed(CreditgateError):
    code, status = "method_not_allowed", 405


class Conflict(CreditgateError):
    code, status = "conflict", 409


class PayloadTooLarge(CreditgateError):
    code, status = "payload_too_large", 413


class IdempotencyMismatch(CreditgateError):
    code, status = "idempotency_mismatch", 422


class AdminDisabled(CreditgateError):
    code, status = "admin_disabled", 503


class Unavailable(CreditgateError):
    code, status = "unavailable", 503


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The contract's JSON error: ``{"success": false, "error": code, "message": text}``."""
    return {"success": False, "error": code, "message": message, **extra}


_OPENAI_NAMES: dict[str, tuple[str, str]] = {
    "unauthorized": ("invalid_request_error", "invalid_api_key"),
    "insufficient_credits": ("insufficient_quota", "insufficient_quota"),
    "rate_limited": ("requests", "rate_limit_exceeded"),
    "key_credit_limit": ("insufficient_quota", "key_credit_limit"),
    "key_rate_limited": ("requests", "key_rate_limited"),
}


def openai_names(status: int, code: str) -> tuple[str, str]:
    """OpenAI's ``type`` and ``code`` for the gateway's error ``code`` answered with ``status``."""
    named = _OPENAI_NAMES.get(code)
    if named is not None:
        return named
    if status == 403:
        return "permission_error", code
    if status >= 500:
        return "server_error", code
    return "invalid_request_error", code


def openai_error_body(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """The contract's error ``body`` (``error_body``) in OpenAI's shape. What the gateway adds
    to its own errors (``creditInfo``) stays at the top level, beside ``error``."""
    extra = {k: v for k, v in body.items() if k not in ("success", "error", "message")}
    kind, code = openai_names(status, str(body.get("error", "")))
    error = {"message": body.get("message", ""), "type": kind, "param": None, "code": code}
    return {"error": error, **extra}


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def answer(exc: CreditgateError) -> ErrorAnswer:
    """The HTTP answer to an error: its status and the contract's body.

    A 401 names the scheme it wants (``WWW-Authenticate: Bearer``); an ``Unavailable`` is
    answered with ``UNAVAILABLE_MESSAGE``, its details being for the caller's log line only.
    """
    if isinstance(exc, Unavailable):
        return ErrorAnswer(exc.status, error_body(exc.code, UNAVAILABLE_MESSAGE), {})
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}
    return ErrorAnswer(exc.status, exc.body(), headers)


async def error_response(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler for ``CreditgateError``, in the web app and the admin API."""
    assert isinstance(exc, CreditgateError)
    if isinstance(exc, Unavailable):
        log.warning("unavailable on %s %s: %s", request.method, request.url.path, exc.message)
    reply = answer(exc)
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
