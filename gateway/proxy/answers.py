"""The proxy's own answers, and the credit fields every proxied answer carries.

- refusals, before anything is held: 401 ``unauthorized`` (through ``gateway.errors.answer``,
  as every 401 and 503), 400 for a malformed ``Idempotency-Key``, 429 ``insufficient_credits``
  (``creditInfo``, ``Retry-After`` = seconds to the period end, ``X-Should-Retry: false``),
  429 ``rate_limited`` (``Retry-After`` = seconds until a call would pass, at least 1,
  ``X-Should-Retry: true``), the key's own limits (401 ``key_expired``, 403
  ``route_not_allowed``, 429 ``key_credit_limit`` and ``key_rate_limited`` as the account's)
  and 409 ``conflict`` for an ``Idempotency-Key`` seen before;
- failures of the backend, after the refund: 502 ``bad_gateway``, 504 ``gateway_timeout``;
- ``credit_headers``: ``X-Credits-*``, ``X-Tokens-Used``, ``X-Request-Id`` and the IETF
  RateLimit fields, after the backend's own headers on a forwarded answer.

Plain ASGI: each answer is sent whole with ``bodies.send_json``. Which answer to give is the
flow's decision (``gateway.proxy.flow``); the field builders are pure (``headers``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from starlette.types import Send

from gateway.accounts.usage import credit_info
from gateway.credits.results import AccountState, Reservation
from gateway.errors import KeyExpired, Unauthorized, error_body
from gateway.proxy import headers as hdr
from gateway.proxy.bodies import send_error, send_json
from gateway.proxy.exchange import Failure, Refusal
from gateway.settings import ErrorStyle

FAILURE_STATUS: dict[Failure, int] = {"bad_gateway": 502, "gateway_timeout": 504}


def credit_headers(
    head: Iterable[tuple[bytes, bytes]],
    state: AccountState,
    reservation: Reservation,
    *,
    charged: int,
    tokens: int,
    request_id: str,
) -> hdr.RawHeaders:
    """``head``, then the credit fields (``state``'s credits left) and the RateLimit fields
    (the tier's and ``reservation``'s rate figures): the one list every proxied answer ends with.
    """
    return [
        *head,
        *hdr.credit_fields(
            remaining=state.credits_remaining, charged=charged, tokens=tokens, request_id=request_id
        ),
        *hdr.ratelimit_fields(
            state, reservation.rate_remaining, reservation.rate_wait_ms, reservation
        ),
    ]


async def refuse_idempotency_key(send: Send, rid_header: hdr.RawHeaders, style: ErrorStyle) -> None:
    """400 for an ``Idempotency-Key`` the contract does not allow."""
    invalid = error_body(
        "invalid_request", "Idempotency-Key must be 1 to 255 printable ASCII characters"
    )
    await send_json(send, 400, invalid, rid_header, style=style)


async def refuse(
    send: Send, reservation: Reservation, rid_header: hdr.RawHeaders, style: ErrorStyle
) -> Refusal:
    """Answer a reservation the scripts did not hold (any status but ``ok``), in the route's
    error ``style``; its outcome."""
    state = reservation.account
    if state is None:  # missing, and the store does not know the account either
        await send_error(send, Unauthorized("unknown account"), rid_header, style=style)
        return "unauthorized"
    fields = [
        *rid_header,
        *hdr.ratelimit_fields(
            state, reservation.rate_remaining, reservation.rate_wait_ms, reservation
        ),
    ]
    if reservation.status == "insufficient":
        body = error_body(
            "insufficient_credits",
            f"this request costs more than the {state.credits_remaining} credits left",
            creditInfo=credit_info(state, 0),
        )
        await _too_many(send, body, fields, state.ms_to_period_end, retry=False, style=style)
        return "insufficient"
    if reservation.status == "rate_limited":
        body = error_body(
            "rate_limited",
            f"over the {state.tier} tier's {state.requests_per_minute} requests per minute",
        )
        await _too_many(send, body, fields, reservation.rate_wait_ms, retry=True, style=style)
        return "rate_limited"
    if reservation.status in _KEY_REFUSALS:
        return await _refuse_for_key(send, reservation, fields, style)
    # duplicate: an Idempotency-Key seen before.
    fields.append((b"x-credits-charged", b"0"))
    if reservation.state == "held":
        message = "a request with this Idempotency-Key is still in flight; retry later"
    elif reservation.state == "charged":
        message = "a request with this Idempotency-Key already succeeded and was charged"
        fields.append((b"idempotent-replayed", b"true"))
    else:
        message = "this Idempotency-Key failed too many times; use a new key"
    await send_json(send, 409, error_body("conflict", message), fields, style=style)
    return "conflict"


async def _too_many(
    send: Send,
    body: dict[str, object],
    fields: hdr.RawHeaders,
    wait_ms: int,
    *,
    retry: bool,
    style: ErrorStyle,
) -> None:
    """A 429: ``Retry-After`` in whole seconds (at least 1) and whether a retry can pass
    (``X-Should-Retry``: a rate, yes; credits, not before ``Retry-After``, the period's end)."""
    after = max(1, math.ceil(wait_ms / 1000))
    should = b"true" if retry else b"false"
    fields = [*fields, (b"retry-after", str(after).encode()), (b"x-should-retry", should)]
    await send_json(send, 429, body, fields, style=style)


_KEY_REFUSALS = frozenset(
    ("key_credit_limit", "key_rate_limited", "key_expired", "route_not_allowed")
)


async def _refuse_for_key(
    send: Send, reservation: Reservation, fields: hdr.RawHeaders, style: ErrorStyle
) -> Refusal:
    """The refusals of the key's own limits (``scopes.KeyRules``), checked by the same reserve
    script as the account's: nothing was held, no rate used."""
    state = reservation.account
    assert state is not None
    status = reservation.status
    if status == "key_expired":
        await send_error(send, KeyExpired("this API key has expired"), fields, style=style)
        return "key_expired"
    if status == "route_not_allowed":
        body = error_body("route_not_allowed", "this API key may not call this route")
        await send_json(send, 403, body, fields, style=style)
        return "route_not_allowed"
    if status == "key_credit_limit":
        left = reservation.key_credits_left or 0
        body = error_body(
            "key_credit_limit",
            f"this request costs more than the {left} credits this API key may still spend "
            f"this period (its limit: {reservation.key_credit_limit})",
            creditInfo=credit_info(state, 0),
        )
        await _too_many(send, body, fields, state.ms_to_period_end, retry=False, style=style)
        return "key_credit_limit"
    body = error_body(
        "key_rate_limited",
        f"over this API key's {reservation.key_requests_per_minute} requests per minute",
    )
    await _too_many(send, body, fields, reservation.key_rate_wait_ms, retry=True, style=style)
    return "key_rate_limited"


async def upstream_failed(
    send: Send,
    failure: Failure,
    message: str,
    state: AccountState,
    reservation: Reservation,
    request_id: str,
    style: ErrorStyle,
) -> None:
    """502 or 504 with ``failure`` as the error code, in the route's error ``style``; ``state``
    is the account after the refund (``X-Credits-Charged: 0``)."""
    fields = credit_headers((), state, reservation, charged=0, tokens=0, request_id=request_id)
    body = error_body(failure, message)
    await send_json(send, FAILURE_STATUS[failure], body, fields, style=style)
