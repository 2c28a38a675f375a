"""What a proxied request holds and what it is charged: flat, or metered by its tokens. Pure.

A route with ``pricing = "request"`` (the default) holds and charges its ``cost``. A route with
``pricing = "tokens"`` holds an upper bound and charges what the backend reported:

- the hold (``hold_of``): the route's ``max_credits``, or less when the request's JSON body names
  ``max_tokens`` / ``max_completion_tokens`` (``ceil(n / TOKENS_PER_CREDIT)``, within
  ``cost``..``max_credits``). An account holding less than that bound, but at least ``cost``,
  has all it holds held instead (the reserve script decides, atomically): the call goes ahead
  and its charge is capped at what was held;
- the charge (``charge_of``): ``ceil(tokens / TOKENS_PER_CREDIT)``, at least ``cost`` and never
  more than was held; the rest of the hold goes back in the settle script. An answer that
  reports no tokens (no ``usage``, no ``X-Tokens-Used``) is charged its whole hold: a client
  must not lower its bill by hiding the usage.
"""

from __future__ import annotations

import json
import math

from gateway.settings import TOKENS_PER_CREDIT, Route

LIMIT_FIELDS = ("max_completion_tokens", "max_tokens")


def metered(route: Route) -> bool:
    return route.pricing == "tokens"


def hold_of(route: Route, body: bytes | None) -> int:
    """The credits a request holds: ``cost``, or a metered route's upper bound for ``body``
    (None: streamed unread, so the route's ``max_credits``)."""
    if route.max_credits is None:
        return route.cost
    limit = _token_limit(body)
    if limit is None:
        return route.max_credits
    return max(route.cost, min(route.max_credits, math.ceil(limit / TOKENS_PER_CREDIT)))


def charge_of(route: Route, tokens: int | None, held: int) -> int:
    """The credits a metered request is charged for ``tokens`` (None: not reported) of its
    ``held`` credits; the flat routes are charged what they held."""
    if route.max_credits is None or tokens is None:
        return held
    return min(held, max(route.cost, math.ceil(tokens / TOKENS_PER_CREDIT)))


def _token_limit(body: bytes | None) -> int | None:
    """The smallest token limit the JSON body names, if any is a positive integer."""
    if not body or b"max_" not in body:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    limits = [
        value
        for name in LIMIT_FIELDS
        if isinstance(value := document.get(name), int)
        and not isinstance(value, bool)
        and value > 0
    ]
    return min(limits) if limits else None
