"""The reaper: refunds reservations whose gateway never settled them.

A gateway replica that dies mid-request leaves its reservation held. Every reservation has
a deadline (the engine's ``hold_ms``: upstream timeout plus grace) in its bucket's deadline
index; past it, the reaper refunds it with the ``refund`` script. The script decides, so a
reservation is refunded exactly once even when the proxy settles it at the same moment or
several workers reap together; the refund is an outbox event like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from gateway.credits import keys
from gateway.credits.engine import CreditEngine

log = logging.getLogger("creditgate.sync.reaper")

Restore = Callable[[str], Awaitable[object]]
"""Load an account Redis lost from the store (``gateway.accounts.restore.restore_from_store``)."""

REAP_REASON = "expired"
BATCH = 100
MAX_ROUNDS = 10
"""Batches per bucket per pass: bounds one pass; what is left waits for the next."""


async def reap(engine: CreditEngine, *, batch: int = BATCH, restore: Restore | None = None) -> int:
    """Refund every overdue reservation of every bucket; the number actually refunded.

    A reservation whose account Redis lost is refunded after ``restore`` (which holds its
    credits again: the store counts them as the account's until settled), in one event.
    """
    refunded = 0
    for bucket in range(keys.BUCKETS):
        for _ in range(MAX_ROUNDS):
            overdue = await engine.overdue(bucket, limit=batch)
            for account, request_id in overdue:
                result = await engine.refund(account, request_id, reason=REAP_REASON)
                if result.status == "missing" and restore is not None:
                    await restore(account)
                    result = await engine.refund(account, request_id, reason=REAP_REASON)
                if result.status == "refunded":
                    refunded += 1
                    log.info(
                        "expired reservation refunded",
                        extra={"account": account, "request_id": request_id},
                    )
            if len(overdue) < batch:
                break
    return refunded
