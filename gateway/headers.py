"""Headers across the gateway: what the backend receives, what the client gets back.

Towards the backend: hop-by-hop headers (RFC 9110 7.6.1, plus any named in ``Connection``),
``Host``, the client's ``Authorization``, ``Content-Length`` (the upstream client sets it)
and every incoming ``X-Gateway-*`` are dropped; ``X-Forwarded-For`` is appended to,
``X-Forwarded-Proto`` / ``-Host`` set, and the signed ``X-Gateway-*`` added by the caller.
Towards the client: hop-by-hop headers and the ones the gateway sets itself are dropped from
the backend's answer, then the gateway's credit and IETF RateLimit fields are added.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from gateway.credits.results import AccountState

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
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
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


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    return named


def upstream_headers(
    incoming: RawHeaders,
    *,
    client_ip: str | None,
    scheme: str,
    gateway: dict[str, str],
) -> list[tuple[str, str]]:
    """The backend's request headers: the client's, cleaned, plus forwarding and ``gateway``."""
    drop = _NOT_FORWARDED | _connection_tokens(incoming)
    out: list[tuple[str, str]] = []
    forwarded_for = ""
    host = ""
    for raw_name, raw_value in incoming:
        name = raw_name.lower()
        if name == b"host":
            host = raw_value.decode("latin-1")
        if name in drop or name.startswith(b"x-gateway-"):
            continue
        if name == b"x-forwarded-for":
            forwarded_for = raw_value.decode("latin-1")
            continue
        out.append((raw_name.decode("latin-1"), raw_value.decode("latin-1")))
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
    upstream = list(upstream)
    drop = _SET_BY_GATEWAY | _connection_tokens(upstream)
    out: RawHeaders = []
    for name, value in upstream:
        lower = name.lower()
        if lower == b"content-length" and keep_length:
            out.append((b"content-length", value))
        elif lower not in drop:
            out.append((lower, value))
    return out


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def ratelimit_fields(
    state: AccountState, rate_remaining: int | None, rate_wait_ms: int
) -> RawHeaders:
    """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers).

    Two policies: ``credits`` (quota: the tier's monthly allowance, remaining: credits left,
    reset: seconds to the period end) and ``minute`` (the tier's requests per minute; left out
    when the tier has no rate limit).
    """
    policy = f'"credits";q={state.allowance};w={CREDITS_WINDOW_S};qu="credits"'
    current = f'"credits";r={state.credits_remaining};t={math.ceil(state.ms_to_period_end / 1000)}'
    if state.requests_per_minute > 0:
        left = state.requests_per_minute if rate_remaining is None else rate_remaining
        policy += f', "minute";q={state.requests_per_minute};w=60'
        current += f', "minute";r={left};t={math.ceil(rate_wait_ms / 1000)}'
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
