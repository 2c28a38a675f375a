"""Restoring an account into Redis from the store of record, when Redis has lost it.

Redis may lose accounts (a restart without persistence, eviction, a failover to an empty
replica). The proxy calls ``restore_from_store`` when ``reserve`` or ``status`` answers
``missing``: the store's snapshot is loaded with the engine's ``restore`` script, which writes
only if the account is still absent, so any number of replicas racing restore it once (the
others see ``exists``). The restore is itself an outbox event (``kind='restore'``, no credit
delta), so the ledger shows it.

What was charged in Redis but not yet synced when Redis lost it is lost with it: the store
is the record, and the account resumes from its last synced version. Its keys' spend this
period, which their credit limits count, is taken from the store's ledger too
(``keyspend``).
"""

from __future__ import annotations

import logging

from gateway.accounts.keyspend import seed_from_store
from gateway.accounts.stored import in_store, orm_loaded
from gateway.credits.results import SNAPSHOT_FIELDS, AccountState, Snapshot
from gateway.services import Services
from store.records import AccountRecord, AccountSnapshot

log = logging.getLogger("creditgate.restore")


def snapshot_of(stored: AccountSnapshot) -> Snapshot:
    """The store's snapshot of an account (a record, a movement) as the credit engine's: both
    sides name the account's fields alike."""
    return Snapshot(**{name: getattr(stored, name) for name in SNAPSHOT_FIELDS})


async def load_record(services: Services, account_id: str) -> AccountRecord | None:
    """The store's snapshot of one account; Unavailable when the store cannot answer."""
    await orm_loaded()
    from store import repository

    return await in_store(services.db, lambda s: repository.get_account(s, account_id=account_id))


async def restore_from_store(services: Services, account_id: str) -> AccountState | None:
    """Load the account into Redis from the store unless Redis has it; its state after that.

    None when the store does not know the account either. Safe to call from any number of
    replicas at once: the script restores once. Raises Unavailable when Redis or the
    store cannot be reached.
    """
    record = await load_record(services, account_id)
    if record is None:
        return None
    change = await services.credits.restore(account_id, snapshot_of(record))
    if change.status == "restored":
        log.warning(
            "account restored from the store of record",
            extra={"account": account_id, "version": record.version},
        )
        await seed_from_store(services, account_id)  # its keys' counts went with it
    return await services.credits.status(account_id)
