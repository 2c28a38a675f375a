"""The pre-authorisation the gateway sends to backends, and the verifier backends mount.

For every proxied request the gateway adds ``X-Gateway-Account``, ``X-Gateway-Tier``,
``X-Gateway-Request-Id``, ``X-Gateway-Credits-Remaining``, ``X-Gateway-Timestamp`` and
``X-Gateway-Signature``: hex HMAC-SHA256, keyed by the signing secret, over
``timestamp\\nmethod\\npath\\naccount\\nrequest_id`` (see CONTRACT.md). A backend that checks
it knows the request passed the gateway (credits reserved) and who it is for.

- ``timestamp`` is Unix time in seconds as a decimal string (``str(int(time.time()))``); a
  request older or further in the future than ``max_age`` seconds is refused, which bounds
  replays.
- ``method`` is upper-cased; ``path`` is the decoded request path without the query string
  (ASGI ``scope["path"]``), the same on both sides because the gateway does not rewrite it.
- Tier and credits remaining are informational and not covered by the signature.

``sign`` and ``verify`` are plain functions for any framework (give ``verify`` each header
once: a signed header sent twice is a forgery attempt, as the middleware treats it);
``GatewaySignatureMiddleware`` is the ASGI wrapper: 401 JSON on failure, else the
``VerifiedRequest`` in ``scope["state"]["gateway"]`` (``request.state.gateway`` in Starlette).
It refuses a websocket outright (closed with 1008): the gateway forwards no upgrade, so none
can have passed it. Lifespan events pass through.
"""

from __future__ import annotations

import functools
import hmac
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import CreditgateError

ACCOUNT_HEADER = "X-Gateway-Account"
TIER_HEADER = "X-Gateway-Tier"
REQUEST_ID_HEADER = "X-Gateway-Request-Id"
CREDITS_HEADER = "X-Gateway-Credits-Remaining"
TIMESTAMP_HEADER = "X-Gateway-Timestamp"
SIGNATURE_HEADER = "X-Gateway-Signature"
GATEWAY_HEADERS = (
    ACCOUNT_HEADER,
    TIER_HEADER,
    REQUEST_ID_HEADER,
    CREDITS_HEADER,
    TIMESTAMP_HEADER,
    SIGNATURE_HEADER,
)
DEFAULT_MAX_AGE = 300.0
_SIGNATURE_HEX_LEN = 64


class SignatureError(CreditgateError):
    """The gateway headers are missing, malformed, stale or do not match the signature."""

    code, status = "invalid_signature", 401


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """What a backend learns from a request whose gateway signature checked out."""

    account: str
    tier: str
    request_id: str
    credits_remaining: int
    timestamp: float


def sign(
    secret: bytes, *, timestamp: str, method: str, path: str, account: str, request_id: str
) -> str:
    """Hex HMAC-SHA256 over ``timestamp\\nmethod\\npath\\naccount\\nrequest_id``."""
    message = "\n".join((timestamp, method.upper(), path, account, request_id))
    mac = _keyed(secret).copy()
    mac.update(message.encode("utf-8"))
    return mac.hexdigest()


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    """HMAC-SHA256 keyed by ``secret`` and fed nothing yet: copied for each signature, so the
    key's padding is hashed once per secret rather than once per request."""
    return hmac.new(secret, digestmod="sha256")


def signed_headers(
    secret: bytes,
    *,
    method: str,
    path: str,
    account: str,
    tier: str,
    request_id: str,
    credits_remaining: int,
    now: float | None = None,
) -> dict[str, str]:
    """The six ``X-Gateway-*`` headers for one upstream request, signed now."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        ACCOUNT_HEADER: account,
        TIER_HEADER: tier,
        REQUEST_ID_HEADER: request_id,
        CREDITS_HEADER: str(credits_remaining),
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(
            secret,
            timestamp=timestamp,
            method=method,
            path=path,
            account=account,
            request_id=request_id,
        ),
    }


def verify(
    secret: bytes,
    headers: Mapping[str, str],
    method: str,
    path: str,
    *,
    max_age: float = DEFAULT_MAX_AGE,
    now: float | None = None,
) -> VerifiedRequest:
    """Check the gateway headers of one request; raise ``SignatureError`` saying why not.

    Header names are matched case-insensitively. The signature is compared in constant time.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    values: dict[str, str] = {}
    for name in GATEWAY_HEADERS:
        value = lowered.get(name.lower())
        if value is None or value == "":
            raise SignatureError(f"missing header {name}")
        values[name] = value

    given = values[SIGNATURE_HEADER].strip().lower()
    if len(given) != _SIGNATURE_HEX_LEN or any(c not in "0123456789abcdef" for c in given):
        raise SignatureError(f"{SIGNATURE_HEADER} is not a hex SHA-256 HMAC")
    raw_timestamp = values[TIMESTAMP_HEADER]
    try:
        timestamp = float(raw_timestamp)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not a number") from None
    if not math.isfinite(timestamp):
        raise SignatureError(f"{TIMESTAMP_HEADER} is not a number")
    try:
        credits_remaining = int(values[CREDITS_HEADER])
    except ValueError:
        raise SignatureError(f"{CREDITS_HEADER} is not an integer") from None

    expected = sign(
        secret,
        timestamp=raw_timestamp,
        method=method,
        path=path,
        account=values[ACCOUNT_HEADER],
        request_id=values[REQUEST_ID_HEADER],
    )
    if not hmac.compare_digest(expected, given):
        raise SignatureError("signature does not match")
    # Checked after the HMAC so an attacker learns nothing about the clock from a forged request.
    current = time.time() if now is None else now
    if abs(current - timestamp) > max_age:
        raise SignatureError(f"{TIMESTAMP_HEADER} is outside the allowed {max_age:g} s window")
    return VerifiedRequest(
        account=values[ACCOUNT_HEADER],
        tier=values[TIER_HEADER],
        request_id=values[REQUEST_ID_HEADER],
        credits_remaining=credits_remaining,
        timestamp=timestamp,
    )


_SIGNED = frozenset(name.lower() for name in GATEWAY_HEADERS)


class GatewaySignatureMiddleware:
    """ASGI middleware for backends: only requests signed by the gateway reach ``app``."""

    def __init__(self, app: ASGIApp, secret: bytes, max_age: float = DEFAULT_MAX_AGE) -> None:
        if not secret:
            raise ValueError("the signing secret must not be empty")
        self.app = app
        self.secret = secret
        self.max_age = max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": "not via the gateway"})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        try:
            for raw_name, raw_value in scope["headers"]:
                name = raw_name.decode("latin-1").lower()
                if name in _SIGNED and name in headers:
                    raise SignatureError(f"header {name} is sent more than once")
                headers[name] = raw_value.decode("latin-1")
            verified = verify(
                self.secret, headers, scope["method"], scope["path"], max_age=self.max_age
            )
        except SignatureError as exc:
            await _send_json(send, exc.status, exc.body())
            return
        scope.setdefault("state", {})["gateway"] = verified
        await self.app(scope, receive, send)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
