"""Headers across the gateway: what the backend receives, what the client gets back.

Towards the backend: hop-by-hop headers (RFC 9110 7.6.1, plus any named in ``Connection``),
``Host``, the client's ``Authorization``, ``Content-Length`` (the upstream client sets it),
``Expect`` and every incoming ``X-Gateway-*`` (with ``_`` for any ``-``) are dropped;
``X-Forwarded-For`` is appended to, ``X-Forwarded-Proto`` / ``-Host`` set,
and the signed ``X-Gateway-*`` added by the caller.
Towards the client: hop-by-hop headers and the ones the gateway sets itself are dropped from
the backend's answer, then the gateway's credit and IETF RateLimit fields are added.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from gateway.credits.results import AccountState, Reservation

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Accept-Encoding stays here: the gateway must read a JSON answer's ``usage`` and splice in
# ``creditInfo``, so backends answer it uncompressed (most clients ask for gzip by default).
_NOT_FORWARDED = HOP_BY_HOP | {
    b"host",
    b"authorization",
    b"accept-encoding",
    b"content-length",
    b"expect",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
# ``Expect: 100-continue`` is the gateway's to answer (the ASGI server sends the interim 100
# when the body is read); forwarded, a backend that never sends it holds the call.
_GATEWAY_PREFIXES = (b"x-gateway-", b"x_gateway_", b"x-gateway_", b"x_gateway-")
"""``X-Gateway-*`` and the names CGI-style servers (which map ``-`` and ``_`` both to ``_``)
read as the same header: a client must not pass any of them to the backend."""
_SET_BY_GATEWAY = HOP_BY_HOP | {
    b"content-length",
    b"date",
    b"server",
    b"x-credits-remaining",
    b"x-credits-charged",
    b"x-tokens-used",
    b"x-request-id",
    b"ratelimit",
    b"ratelimit-policy",
    b"retry-after",
    b"x-should-retry",
}
CREDITS_WINDOW_S = 2_592_000
"""The RateLimit window of the credits quota: 30 days, the monthly period."""


def _tokens(value: bytes) -> set[bytes]:
    """The header names a ``Connection`` field lists (RFC 9110 7.6.1): hop-by-hop too."""
    return {t.strip().lower() for t in value.split(b",")}


def upstream_headers(
    incoming: RawHeaders,
    *,
    client_ip: str | None,
    scheme: str,
    gateway: dict[str, str],
) -> list[tuple[str, str]]:
    """The backend's request headers: the client's, cleaned, plus forwarding and ``gateway``.

    One pass over the client's headers (this runs for every request); the names a
    ``Connection`` field lists, rare in practice, are dropped afterwards.
    """
    out: list[tuple[str, str]] = []
    named: set[bytes] = set()
    forwarded_for = ""
    host = ""
    for raw_name, raw_value in incoming:
        name = raw_name.lower()
        if name in _NOT_FORWARDED or name.startswith(_GATEWAY_PREFIXES):
            if name == b"host":
                host = raw_value.decode("latin-1")
            elif name == b"connection":
                named |= _tokens(raw_value)
        elif name == b"x-forwarded-for":
            forwarded_for = raw_value.decode("latin-1")
        else:
            out.append((raw_name.decode("latin-1"), raw_value.decode("latin-1")))
    if named:
        out = [(n, v) for n, v in out if n.lower().encode("latin-1") not in named]
        if b"x-forwarded-for" in named:
            forwarded_for = ""
    if client_ip:
        forwarded_for = f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip
    if forwarded_for:
        out.append(("X-Forwarded-For", forwarded_for))
    out.append(("X-Forwarded-Proto", scheme))
    if host:
        out.append(("X-Forwarded-Host", host))
    out.extend(gateway.items())
    return out


def client_headers(upstream: Iterable[tuple[bytes, bytes]], *, keep_length: bool) -> RawHeaders:
    """The backend's response headers the client may see (``Content-Length`` if ``keep_length``)."""
    out: RawHeaders = []
    named: set[bytes] = set()
    for name, value in upstream:
        lower = name.lower()
        if lower == b"content-length":
            if keep_length:
                out.append((lower, value))
        elif lower == b"connection":
            named |= _tokens(value)
        elif lower not in _SET_BY_GATEWAY:
            out.append((lower, value))
    if named:
        out = [(n, v) for n, v in out if n == b"content-length" or n not in named]
    return out


def pick(headers: Iterable[tuple[bytes, bytes]], names: frozenset[bytes]) -> dict[bytes, str]:
    """The values of ``names`` (lower case) in one pass; the first of a repeated field."""
    found: dict[bytes, str] = {}
    for key, value in headers:
        lower = key.lower()
        if lower in names and lower not in found:
            found[lower] = value.decode("latin-1")
    return found


def ratelimit_fields(
    state: AccountState,
    rate_remaining: int | None,
    rate_wait_ms: int,
    key: Reservation | None = None,
) -> RawHeaders:
    """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers).

    Two policies: ``credits`` (quota: the tier's monthly allowance, remaining: credits left,
    reset: seconds to the period end) and ``minute`` (the tier's requests per minute; left out
    when the tier has no rate limit). A key with its own limits (``key``'s reservation says)
    adds ``key-credits`` (its credit limit per period, what it may still spend) and
    ``key-minute`` (its own requests per minute).
    """
    reset = math.ceil(state.ms_to_period_end / 1000)
    policy = f'"credits";q={state.allowance};w={CREDITS_WINDOW_S};qu="credits"'
    current = f'"credits";r={state.credits_remaining};t={reset}'
    if state.requests_per_minute > 0:
        left = state.requests_per_minute if rate_remaining is None else rate_remaining
        policy += f', "minute";q={state.requests_per_minute};w=60'
        current += f', "minute";r={left};t={math.ceil(rate_wait_ms / 1000)}'
    if key is not None and key.key_credit_limit is not None:
        spendable = key.key_credit_limit if key.key_credits_left is None else key.key_credits_left
        policy += f', "key-credits";q={key.key_credit_limit};w={CREDITS_WINDOW_S};qu="credits"'
        current += f', "key-credits";r={spendable};t={reset}'
    if key is not None and key.key_requests_per_minute:
        rpm = key.key_requests_per_minute
        left = rpm if key.key_rate_remaining is None else key.key_rate_remaining
        policy += f', "key-minute";q={rpm};w=60'
        current += f', "key-minute";r={left};t={math.ceil(key.key_rate_wait_ms / 1000)}'
    return [(b"ratelimit-policy", policy.encode()), (b"ratelimit", current.encode())]


def credit_fields(
    *, remaining: int, charged: int, tokens: int | None, request_id: str
) -> RawHeaders:
    out: RawHeaders = [
        (b"x-credits-remaining", str(remaining).encode()),
        (b"x-credits-charged", str(charged).encode()),
    ]
    if tokens is not None:
        out.append((b"x-tokens-used", str(tokens).encode()))
    out.append((b"x-request-id", request_id.encode()))
    return out
