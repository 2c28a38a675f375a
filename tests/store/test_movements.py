"""apply_movements: every event exactly once, snapshots only forward, on both backends."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from store import repository
from store.database import session
from store.records import Movement
from store.timefmt import to_datetime
from tests.support.samples import PERIOD_END, T0, make_movement


def apply(engine: Engine, movements: Sequence[Movement]) -> int:
    with session(engine) as s:
        return repository.apply_movements(s, movements=movements)


def ledger_ids(engine: Engine, account_id: str) -> list[str]:
    with session(engine) as s:
        return [e.event_id for e in repository.ledger_page(s, account_id=account_id, limit=10_000)]


def test_replays_and_overlapping_batches_record_each_event_once(engine: Engine) -> None:
    events = [make_movement("acct", v) for v in range(1, 11)]
    assert apply(engine, events[:6]) == 6
    assert apply(engine, events[:6]) == 0
    assert apply(engine, events[4:]) == 4
    assert apply(engine, events[::-1] + events) == 0
    assert sorted(ledger_ids(engine, "acct")) == sorted(m.event_id for m in events)
    with session(engine) as s:
        assert repository.ledger_totals(s) == {"acct": (-10, 0)}


def test_duplicates_inside_one_batch_count_once(engine: Engine) -> None:
    one = make_movement("acct", 1)
    assert apply(engine, [one, one, make_movement("acct", 2), one]) == 2
    assert len(ledger_ids(engine, "acct")) == 2


def test_an_unknown_account_is_created_from_its_newest_snapshot(engine: Engine) -> None:
    batch = [make_movement("new", 3), make_movement("new", 1), make_movement("new", 2)]
    assert apply(engine, batch) == 3
    with session(engine) as s:
        record = repository.get_account(s, account_id="new")
    assert record is not None
    assert record.email is None
    assert (record.version, record.plan_credits, record.total_tokens) == (3, 97, 6000)
    assert (record.tier, record.subscribed) == ("pro", True)
    assert record.period_end == to_datetime(PERIOD_END)
    assert record.subscription_ends_ms == PERIOD_END


def test_the_snapshot_never_moves_backwards(engine: Engine) -> None:
    apply(engine, [make_movement("acct", 5, bonus_credits=7)])
    # An older movement arriving late still lands in the ledger, but not on the snapshot.
    assert apply(engine, [make_movement("acct", 4, bonus_credits=1, tier="free")]) == 1
    with session(engine) as s:
        record = repository.get_account(s, account_id="acct")
    assert record is not None
    assert (record.version, record.bonus_credits, record.tier) == (5, 7, "pro")

    apply(
        engine, [make_movement("acct", 6, subscribed=False, subscription_ends_ms=None, tier="free")]
    )
    with session(engine) as s:
        record = repository.get_account(s, account_id="acct")
    assert record is not None
    assert (record.version, record.tier, record.subscribed) == (6, "free", False)
    assert record.subscription_ends_at is None


def test_a_synced_account_keeps_its_email_and_creation_time(engine: Engine) -> None:
    with session(engine) as s:
        created = repository.create_account(
            s,
            account_id="acct",
            email="a@example.com",
            tier="free",
            plan_credits=5,
            period_end_ms=PERIOD_END,
        )
    assert created.version == 0
    apply(engine, [make_movement("acct", 1, kind="open", plan_delta=5, tokens=0, plan_credits=5)])
    with session(engine) as s:
        record = repository.get_account(s, account_id="acct")
    assert record is not None
    assert (record.email, record.created_at) == ("a@example.com", created.created_at)
    assert (record.version, record.plan_credits) == (1, 5)


def test_ledger_rows_carry_the_event(engine: Engine) -> None:
    grant = make_movement(
        "acct",
        1,
        kind="grant",
        plan_delta=0,
        bonus_delta=25,
        tokens=0,
        request_id="",
        reason="apology for the outage",
    )
    charge = make_movement("acct", 2, plan_delta=-2, bonus_delta=-1, tokens=4321)
    apply(engine, [grant, charge])
    with session(engine) as s:
        newest, oldest = repository.ledger_page(s, account_id="acct")
    assert (newest.event_id, newest.kind, newest.request_id) == (
        charge.event_id,
        "charge",
        "req-acct-2",
    )
    assert (newest.plan_delta, newest.bonus_delta, newest.credits_delta) == (-2, -1, -3)
    assert (newest.tokens, newest.version, newest.occurred_ms) == (4321, 2, T0 + 2000)
    assert (oldest.kind, oldest.credits_delta, oldest.request_id) == ("grant", 25, None)
    assert oldest.reason == "apology for the outage"
    assert newest.recorded_at.tzinfo is not None and newest.occurred_at.utcoffset() is not None


def test_a_large_batch_of_many_accounts(engine: Engine) -> None:
    batch = [make_movement(f"acct-{i % 37:02d}", i // 37 + 1) for i in range(3000)]
    assert apply(engine, batch) == 3000
    assert apply(engine, batch[1000:2500]) == 0
    with session(engine) as s:
        totals = repository.ledger_totals(s)
        ids = repository.all_account_ids(s)
        last = repository.get_account(s, account_id="acct-36")
    assert ids == sorted(f"acct-{i:02d}" for i in range(37))
    assert sum(plan for plan, _ in totals.values()) == -3000
    assert last is not None and last.version == max(
        m.version for m in batch if m.account_id == "acct-36"
    )


def test_nothing_to_apply(engine: Engine) -> None:
    assert apply(engine, []) == 0
