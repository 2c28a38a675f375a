"""Several OS processes apply overlapping, differently ordered batches of the same movements
to PostgreSQL at once: every event is recorded exactly once (the counts the callers get back
add up to the number of events), nobody deadlocks, and each snapshot ends at its top version."""

from __future__ import annotations

import multiprocessing
import random
from multiprocessing.synchronize import Barrier

import pytest

from store import repository
from store.database import create_db_engine, session, upgrade
from store.records import Movement
from tests.support.samples import PERIOD_END, T0, reset_postgresql

ACCOUNTS = 10
VERSIONS = 200
PROCESSES = 3
BATCH = 250
JOIN_TIMEOUT_S = 120


def history() -> list[Movement]:
    return [
        Movement(
            event_id=f"{a}-{T0 + v}-0",
            account_id=f"acct-{a}",
            kind="charge",
            plan_delta=-1,
            bonus_delta=0,
            tokens=v,
            request_id=f"req-{a}-{v}",
            reason=None,
            occurred_ms=T0 + v,
            version=v,
            plan_credits=VERSIONS - v,
            bonus_credits=a,
            tier="pro",
            subscribed=True,
            subscription_ends_ms=PERIOD_END,
            period_end_ms=PERIOD_END,
            total_tokens=v * (v + 1) // 2,
            monthly_tokens=v,
        )
        for a in range(ACCOUNTS)
        for v in range(1, VERSIONS + 1)
    ]


def apply_all(url: str, seed: int, start: Barrier, added: multiprocessing.Queue[int]) -> None:
    """One process: every movement, shuffled its own way, in batches of BATCH per transaction."""
    movements = history()
    random.Random(seed).shuffle(movements)
    engine = create_db_engine(url)
    try:
        start.wait(timeout=60)
        total = 0
        for i in range(0, len(movements), BATCH):
            with session(engine) as s:
                total += repository.apply_movements(s, movements=movements[i : i + BATCH])
        added.put(total)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_overlapping_batches_from_several_processes(pg_url: str) -> None:
    reset_postgresql(pg_url)
    upgrade(pg_url)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    added: multiprocessing.Queue[int] = context.Queue()
    workers = [
        context.Process(target=apply_all, args=(pg_url, seed, start, added))
        for seed in range(PROCESSES)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(JOIN_TIMEOUT_S)
        assert [w.exitcode for w in workers] == [0] * PROCESSES
        counts = [added.get(timeout=5) for _ in workers]
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()

    assert sum(counts) == ACCOUNTS * VERSIONS
    engine = create_db_engine(pg_url)
    try:
        with session(engine) as s:
            totals = repository.ledger_totals(s)
            records = [repository.get_account(s, account_id=f"acct-{a}") for a in range(ACCOUNTS)]
    finally:
        engine.dispose()
    assert totals == {f"acct-{a}": (-VERSIONS, 0) for a in range(ACCOUNTS)}
    for a, record in enumerate(records):
        assert record is not None
        assert (record.version, record.plan_credits, record.bonus_credits) == (VERSIONS, 0, a)
        assert record.total_tokens == VERSIONS * (VERSIONS + 1) // 2
