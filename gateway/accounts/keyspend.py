"""What keys have spent in their account's period, from the store of record, for Redis.

A key's credit limit is counted in Redis by the reserve script, only while the key has one.
Redis cannot know a key's spend when it lost the account (restored from the store, its keys'
counts lost with it) or when a key gains a credit limit (what it spent before was not counted).
Both read the store's ledger for the account's current period and raise Redis's count to it
(``CreditEngine.seed_key_spend``). The store is a few seconds behind Redis (the sync's lag):
charges not copied yet are missing from its sum, and Redis's own count for the period stays
when it is more.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from gateway.accounts.stored import in_store, orm_loaded
from gateway.credits.engine import PERIOD_MS
from gateway.services import Services

log = logging.getLogger("creditgate.keys")


async def seed_from_store(services: Services, account_id: str, key_id: str | None = None) -> None:
    """Raise the account's keys' counts (or one key's) to what the store says they spent in
    the current period; Unavailable when Redis or the store cannot answer."""
    await orm_loaded()
    from store import history

    state = await services.credits.status(account_id)
    if state is None:
        return
    since = datetime.fromtimestamp((state.period_end_ms - PERIOD_MS) / 1000, UTC)
    spent = await in_store(
        services.db, lambda s: history.key_spend(s, account_id=account_id, since=since)
    )
    if key_id is not None:
        spent = {key_id: spent.get(key_id, 0)}
    if not spent:
        return
    outcome = await services.credits.seed_key_spend(account_id, state.period_end_ms, spent)
    log.info(
        "keys' spend this period set from the store: %s",
        outcome,
        extra={"account": account_id, "keys": len(spent)},
    )
