"""The errors creditgate raises on purpose, and their one mapping to HTTP answers.

    CreditgateError                 code, status, message
    ├── InvalidRequest              400 invalid_request: bad JSON or fields, says which
    ├── Unauthorized                401 unauthorized: no, unknown or revoked key / token
    ├── NotFound                    404 not_found
    ├── Conflict                    409 conflict
    ├── AdminDisabled               503 admin_disabled: no CREDITGATE_ADMIN_TOKEN
    └── StorageUnavailable          503 unavailable: Redis or the store cannot be reached

Third-party errors (redis-py, SQLAlchemy) are converted once, where they are raised, with
``raise ... from exc``. The 429s and upstream failures of the proxy are answers, not errors:
the proxy builds them itself with ``error_body``.
"""

from __future__ import annotations

from typing import Any


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


class NotFound(CreditgateError):
    code, status = "not_found", 404


class Conflict(CreditgateError):
    code, status = "conflict", 409


class AdminDisabled(CreditgateError):
    code, status = "admin_disabled", 503


class StorageUnavailable(CreditgateError):
    code, status = "unavailable", 503


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The contract's JSON error: ``{"success": false, "error": code, "message": text}``."""
    return {"success": False, "error": code, "message": message, **extra}
