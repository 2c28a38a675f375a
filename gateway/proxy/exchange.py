"""A proxied request as its steps pass it on (``Exchange``), and how it ended (``Outcome``).

The outcomes are the ``outcome`` label of ``creditgate_requests_total``, declared once as
``Literal`` types (as ``gateway.credits.results`` does for the scripts' statuses): the steps
return them and the flow counts them, so a misspelt outcome is a type error rather than a
new metric series.

=====================  ======================================================================
outcome                what happened (and to the reservation)
=====================  ======================================================================
charged                the backend answered 2xx and the answer went out whole: charged
charged_client_gone    the client left in the middle of a 2xx stream: charged all the same
refunded               the backend answered other than 2xx, or broke mid-stream: refunded
bad_gateway            502: the backend was unreachable or its answer broke off: refunded
gateway_timeout        504: the backend did not answer in time: refunded
client_gone            the client left before the backend answered: refunded (or never held)
unauthorized           401: no, unknown or revoked key, or an account Redis and the store lack
insufficient           429 ``insufficient_credits``: nothing held
rate_limited           429 ``rate_limited``: nothing held
key_expired            401 ``key_expired``: the key is past its own expiry
route_not_allowed      403 ``route_not_allowed``: the path is outside the key's own routes
key_credit_limit       429 ``key_credit_limit``: the key's own credit limit: nothing held
key_rate_limited       429 ``key_rate_limited``: the key's own requests per minute: nothing held
conflict               409: an ``Idempotency-Key`` in flight, already charged (its answer not
                       kept), or spent
replayed               an ``Idempotency-Key`` already charged: its kept first answer, again
mismatch               422: an ``Idempotency-Key`` first used for another request
invalid                400: a malformed ``Idempotency-Key``
unavailable            503: Redis or the store failed before anything was held
error                  an exception (the router answers 500) or a cancellation: any hold refunded
=====================  ======================================================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gateway.accounts.keycache import Caller
from gateway.credits.results import AccountState, Reservation
from gateway.settings import Route

if TYPE_CHECKING:
    from gateway.proxy.replays import FirstAnswer

Refusal = Literal[
    "unauthorized",
    "insufficient",
    "rate_limited",
    "conflict",
    "key_expired",
    "route_not_allowed",
    "key_credit_limit",
    "key_rate_limited",
]
"""The answers to a reservation the scripts refused (or an account the store lost)."""
Failure = Literal["bad_gateway", "gateway_timeout"]
"""The gateway's answers when the backend failed; also the error code of the body."""
Outcome = Literal[
    Refusal,
    Failure,
    "charged",
    "charged_client_gone",
    "refunded",
    "client_gone",
    "invalid",
    "replayed",
    "mismatch",
    "unavailable",
    "error",
]


Keep = Callable[["FirstAnswer"], Awaitable[None]]
"""Keeps a charged first answer for the retries of its ``Idempotency-Key`` (``replays``)."""


@dataclass(slots=True)
class Exchange:
    """One proxied request's facts, once its reservation is held; passed between the steps."""

    route: Route
    caller: Caller
    request_id: str
    reservation: Reservation
    tokens: int = 0
    """The tokens the settle charges, once the answer has gone out (``relay``)."""
    keep: Keep | None = None
    """With an ``Idempotency-Key``: keeps a charged answer for the key's retries."""
    charged: int = 0
    """The credits the settle charges, once the answer has gone out (``relay``)."""

    @property
    def held(self) -> int:
        """The credits the reservation holds (a metered route's upper bound, or less)."""
        return self.reservation.hold or self.route.cost

    @property
    def state(self) -> AccountState:
        """The account as the reserve left it (a held reservation always carries it)."""
        assert self.reservation.account is not None
        return self.reservation.account
