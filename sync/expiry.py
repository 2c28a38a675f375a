"""The expiry sweep: downgrade ended subscriptions that nobody touched, so reports are right.

Expiry is lazy in the credit scripts (applied on an account's next touch). An account that
is never used again would stay "subscribed" in Redis and in the store; each sync pass asks
the store for subscriptions whose end has passed and touches each with ``engine.status``,
which downgrades it in Redis and emits the ``expire`` event the next pass copies back.
Idempotent: touching an account whose subscription Redis has renewed changes nothing.
"""

from __future__ import annotations

import logging

from gateway.accounts.restore import restore_from_store
from gateway.accounts.stored import in_store
from gateway.services import Services
from store import repository

log = logging.getLogger("creditgate.expiry")

BATCH = 500
MAX_PER_PASS = 5000
"""A bound on one pass's work; what is left waits for the next pass."""


async def sweep_expired(services: Services, *, now_ms: int | None = None) -> int:
    """Touch every account whose subscription ended per the store; returns those downgraded.

    ``now_ms`` defaults to the scripts' clock: the engine's injected clock when it has one
    (tests move it), else Redis ``TIME``.
    """
    if now_ms is None:
        now_ms = await services.credits.now_ms()
    downgraded = 0
    after = ""
    seen = 0
    while seen < MAX_PER_PASS:
        due = await _due(services, now_ms, after=after, limit=BATCH)
        for account_id in due:
            state = await services.credits.status(account_id)
            if state is None:
                state = await restore_from_store(services, account_id)
            if state is not None and not state.subscribed:
                downgraded += 1
        seen += len(due)
        if len(due) < BATCH:
            break
        after = due[-1]
    if downgraded:
        log.info("expiry sweep downgraded %d account(s)", downgraded)
    return downgraded


async def _due(services: Services, now_ms: int, *, after: str, limit: int) -> list[str]:
    return await in_store(
        services.db,
        lambda s: repository.ended_subscriptions(s, ended_by_ms=now_ms, after=after, limit=limit),
    )
