"""``Idempotency-Key``: a retry of a charged request within 24 h is not charged again.

The request id of an idempotent request is derived from (account, key), so every replica
reserves under the same id and the engine's per-request-id memory does the rest; the reserve
fixes that memory at ``engine.IDEMPOTENCY_RETAIN_MS`` (24 h) for whoever settles or refunds it
(the proxy, or the reaper).

What a retry gets (the gateway's choice, documented in the README too):

- first attempt still in flight: 409 ``conflict`` (retry later); nothing held, nothing charged;
- first attempt charged: its kept answer again (``gateway.proxy.replays``), else 409
  ``conflict`` with ``X-Credits-Charged: 0`` and ``Idempotent-Replayed: true``: either way the
  backend is not called again and nothing is charged;
- another request (method, path, query, body) with the key: 422 (``replays``, before this);
- first attempt refunded (backend failed): the retry is a new attempt under the next derived
  id (``<id>.1``, ``<id>.2``, ...), reserved and charged normally, up to ``MAX_ATTEMPTS``.

A key is 1 to 255 printable ASCII characters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from gateway.credits.engine import IDEMPOTENCY_RETAIN_MS
from gateway.credits.results import Reservation

Reserve = Callable[[str, int | None], Awaitable[Reservation]]
"""``CreditEngine.reserve`` of one request's account, cost and key, given a request id and
how long it is remembered once settled (None: the engine's default)."""

MAX_KEY_LENGTH = 255
MAX_ATTEMPTS = 8


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and all(" " <= c <= "~" for c in key)


def base_request_id(account: str, key: str) -> str:
    digest = hashlib.sha256(f"{account}\n{key}".encode()).hexdigest()
    return f"idem-{digest[:40]}"


async def reserve_idempotent(reserve: Reserve, account: str, key: str) -> tuple[Reservation, str]:
    """Reserve for an idempotent request; skips attempts that were refunded.

    Returns the reservation and the request id it was made under. A ``duplicate`` answer says
    the key's request is in flight (state ``held``) or done and charged (``charged``), or, if
    every attempt was refunded, that the retry budget is spent (``refunded``).
    """
    base = base_request_id(account, key)
    request_id = base
    reservation = await reserve(request_id, IDEMPOTENCY_RETAIN_MS)
    attempt = 0
    while (
        reservation.status == "duplicate"
        and reservation.state == "refunded"
        and attempt + 1 < MAX_ATTEMPTS
    ):
        attempt += 1
        request_id = f"{base}.{attempt}"
        reservation = await reserve(request_id, IDEMPOTENCY_RETAIN_MS)
    return reservation, request_id
