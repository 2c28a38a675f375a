"""The sync worker: copies the engine's outbox to the store of record, reaps, sweeps expiry.

A pass drains the outbox streams in bounded batches. Each batch is written with
``repository.apply_movements`` in one transaction and acknowledged only after the commit:
a crash before the ack re-delivers the batch (to this worker, or to another one through
XAUTOCLAIM), and the store records every event once (ledger unique by event id, snapshots
only moving forward by version). So any number of workers may run at once.

When the store fails, the batch stays pending, the error is logged and counted, and the next
pass retries after a growing pause. The reaper and the expiry sweep follow each pass. What the
worker counts (``stats``) is its own, served by ``creditgate sync --metrics-port``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid

from gateway.accounts.restore import restore_from_store
from gateway.errors import Unavailable
from gateway.services import Services
from store import repository
from store.database import session
from store.errors import StoreError, StoreUnavailable
from store.records import Movement
from sync.expiry import sweep_expired
from sync.metrics import SyncStats
from sync.outbox import DEFAULT_CLAIM_IDLE_MS, OutboxEntry, OutboxReader
from sync.reaper import reap
from sync.webhooks import Notifier

log = logging.getLogger("creditgate.sync")

DEFAULT_BATCH_SIZE = 200
"""Entries read per bucket per batch (up to about three times that with pending + claimed)."""
MAX_BATCHES_PER_PASS = 50
MAX_BACKOFF_S = 30.0
PRUNE_EVERY = 100
"""Passes between prunings of consumers that died with nothing pending."""
PRUNE_IDLE_MS = 3_600_000


def default_consumer() -> str:
    """A consumer name unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SyncWorker:
    """One sync worker; ``run`` loops until ``should_exit``, ``run_once`` does one pass."""

    def __init__(
        self,
        services: Services,
        *,
        consumer: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
        max_batches: int = MAX_BATCHES_PER_PASS,
        notifier: Notifier | None = None,
    ) -> None:
        self.services = services
        self.notifier = notifier or Notifier.from_settings(services.settings)
        """Webhooks of the synced movements: announced once per movement, whichever replica
        served it, after the store committed it (at least once: a batch re-delivered after a
        crash announces again; receivers deduplicate by ``data.eventId``)."""
        self.consumer = consumer or default_consumer()
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.reader = OutboxReader(services.redis, self.consumer, claim_idle_ms=claim_idle_ms)
        self.stats = SyncStats()
        self.should_exit = False
        self.failures = 0
        """Failed passes in a row; the pause before the next one doubles with each."""
        self._groups_ready = False

    async def run_once(self) -> int:
        """One pass: sync the outbox, reap expired reservations, sweep ended subscriptions.

        Returns the events written to the store. Never raises for an unreachable store or
        Redis: the failure is logged and counted and the next pass retries.
        """
        applied_before = self.stats.applied
        self.stats.passes += 1
        failed = False
        try:
            await self.sync()
        except (Unavailable, StoreError) as exc:
            failed = True
            self.stats.errors += 1
            log.error("sync failed, retrying next pass: %s", exc)
        for name, job in (("reap", self._reap), ("expiry sweep", self._sweep_expired)):
            try:
                await job()
            except (Unavailable, StoreError) as exc:
                failed = True
                self.stats.errors += 1
                log.error("%s failed, retrying next pass: %s", name, exc)
        if self.stats.passes % PRUNE_EVERY == 1:
            try:
                await self.reader.prune_consumers(PRUNE_IDLE_MS)
            except Unavailable as exc:
                failed = True
                self.stats.errors += 1
                log.error("pruning consumers failed: %s", exc)
        self.failures = self.failures + 1 if failed else 0
        try:
            self.stats.lag_seconds = await self.reader.lag_ms() / 1000
        except Unavailable:
            pass
        return self.stats.applied - applied_before  # batches committed before a failure count

    async def sync(self) -> int:
        """Drain the outbox into the store, batch by batch (at most ``max_batches``)."""
        if not self._groups_ready:
            await self.reader.ensure_groups()
            self._groups_ready = True
        applied = 0
        for _ in range(self.max_batches):
            entries = await self.reader.read(self.batch_size)
            if not entries:
                break
            applied += await self.apply(entries)
            if self.should_exit:
                break
        return applied

    async def apply(self, entries: list[OutboxEntry]) -> int:
        """Write one batch in one transaction, then acknowledge it; the events written.

        A batch the store refuses for a reason other than being unreachable (a bug, a value
        out of range) would block the sync forever: it is retried one event at a time and
        the events refused alone are set aside (``reader.reject``), logged and counted.
        """
        for entry in entries:
            if entry.error is not None:
                await self._reject(entry, entry.error)
        movements = sorted(
            (e.movement for e in entries if e.movement is not None),
            key=lambda m: (m.account_id, m.version),
        )
        applied = len(movements)
        if movements:
            try:
                await asyncio.to_thread(self._commit, movements)
                self.notifier.notify_movements(movements, self.services.settings.tiers)
            except StoreUnavailable:
                raise
            except Exception as exc:
                log.error("the store refused a batch, retrying it event by event: %r", exc)
                applied = await self._one_by_one(entries)
        await self.reader.ack(entries)
        self.stats.batches += 1
        self.stats.applied += applied
        return applied

    async def _one_by_one(self, entries: list[OutboxEntry]) -> int:
        applied = 0
        for entry in entries:
            if entry.movement is None:
                continue
            try:
                await asyncio.to_thread(self._commit, [entry.movement])
                self.notifier.notify_movements([entry.movement], self.services.settings.tiers)
                applied += 1
            except StoreUnavailable:
                raise
            except Exception as exc:
                await self._reject(entry, f"refused by the store: {exc!r}")
        return applied

    async def _reject(self, entry: OutboxEntry, error: str) -> None:
        await self.reader.reject(entry, error)
        self.stats.rejected += 1
        log.error("outbox event %s set aside: %s", entry.event_id, error)

    def _commit(self, movements: list[Movement]) -> None:
        with session(self.services.db) as db:
            repository.apply_movements(db, movements=movements)

    async def _reap(self) -> None:
        self.stats.reaped += await reap(
            self.services.credits,
            restore=lambda account: restore_from_store(self.services, account),
        )

    async def _sweep_expired(self) -> None:
        self.stats.expired += await sweep_expired(self.services)

    def pause(self) -> float:
        """Seconds until the next pass: the interval, doubled per failure in a row, capped."""
        interval = self.services.settings.sync_interval
        if not self.failures:
            return interval
        return min(MAX_BACKOFF_S, interval * 2.0 ** min(self.failures, 16))

    async def run(self) -> None:
        """Pass after pass, every ``sync_interval`` seconds, until ``should_exit``."""
        log.info("sync worker %s started", self.consumer)
        await self.notifier.start()
        try:
            while not self.should_exit:
                try:
                    await self.run_once()
                except Exception:
                    # A bug must not stop the loop for good: nothing was acknowledged, so retry.
                    self.stats.errors += 1
                    self.failures += 1
                    log.exception("sync pass crashed, retrying")
                deadline = time.monotonic() + self.pause()
                while not self.should_exit and time.monotonic() < deadline:
                    await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        finally:
            await self.notifier.aclose()
        log.info("sync worker %s stopped", self.consumer)
