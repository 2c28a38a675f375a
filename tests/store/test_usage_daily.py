"""The daily usage roll-up (store/usage_daily.py) against the ledger, on SQLite and
PostgreSQL: random ledgers of both layouts' requests, metered charges, refunds, grants and
movements without a route or key, synced in random batches with replays; every account's
history and top accounts read from the roll-up equal the same queries on the ledger alone."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, func, inspect, select

from store.database import alembic_config, session, upgrade
from store.history import GROUPINGS, top_accounts, usage_history
from store.models import USAGE_DAILY
from store.records import Movement
from store.repository import apply_movements
from store.timefmt import to_ms
from store.usage_daily import rollup_mismatches
from tests.support.samples import make_movement

DAY1 = datetime(2026, 11, 27, tzinfo=UTC)
ROUTES = [None, "/api/x/", "/api/y/"]
KEYS = [None, "key_1", "key_2"]


class Ledger:
    """Movements as the engine writes them, versions increasing per account."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.moves: list[Movement] = []
        self.versions: dict[str, int] = {}

    def add(self, acct: str, when: datetime, **fields: object) -> None:
        v = self.versions.get(acct, 0) + 1
        self.versions[acct] = v
        fields.setdefault("tokens", 0)
        fields.setdefault("request_id", None)
        self.moves.append(
            make_movement(acct, v, event_id=f"e-{acct}-{v}", occurred_ms=to_ms(when), **fields)
        )

    def request(self, acct: str, when: datetime, rid: str) -> None:
        rng = self.rng
        named = {"route": rng.choice(ROUTES), "key_id": rng.choice(KEYS)}
        held, tokens = rng.randint(0, 6), rng.randint(0, 5000)
        used = rng.randint(0, held)
        later = when + timedelta(milliseconds=rng.randint(0, 500))
        shape = rng.choice(["charge", "metered", "refund", "old", "old-metered", "old-failed"])
        if shape in ("charge", "metered"):  # since 0002: the request's one movement
            back = held - used if shape == "metered" else 0
            self.add(acct, when, kind="charge", plan_delta=back - held, tokens=tokens,
                     request_id=rid, held_plan=held, **named)  # fmt: skip
        elif shape == "refund":
            lost = -rng.randint(0, 1) if held else 0
            self.add(acct, when, kind="refund", plan_delta=lost, request_id=rid,
                     held_plan=held, **named)  # fmt: skip
        else:  # older ledgers: the hold, a refund of what was not used, the charge
            self.add(acct, when, kind="hold", plan_delta=-held, request_id=rid, **named)
            if shape != "old" and held > used:
                self.add(acct, later, kind="refund", plan_delta=held - used, request_id=rid,
                         **named)  # fmt: skip
            if shape != "old-failed":
                self.add(acct, later, kind="charge", plan_delta=0, tokens=tokens,
                         request_id=rid, **named)  # fmt: skip

    def other(self, acct: str, when: datetime) -> None:
        rng = self.rng
        kind = rng.choice(["grant", "reset", "charge-without-request"])
        if kind == "grant":
            self.add(acct, when, kind="grant", bonus_delta=rng.randint(1, 50), request_id="op")
        elif kind == "reset":
            self.add(acct, when, kind="reset", plan_delta=-rng.randint(0, 9))
        else:
            self.add(acct, when, kind="charge", plan_delta=-rng.randint(0, 3), tokens=7)


def random_ledger(seed: int) -> list[Movement]:
    rng = random.Random(seed)
    ledger = Ledger(rng)
    # Times in order, each request's movements within its second, never past midnight.
    for n in range(rng.randint(60, 140)):
        acct = f"acct-{rng.randint(0, 4)}"
        day = DAY1 + timedelta(days=rng.randint(0, 4))
        when = day + timedelta(milliseconds=rng.randint(0, 86_399_000 - 1))
        if rng.random() < 0.8:
            ledger.request(acct, when, f"req-{n}")
        else:
            ledger.other(acct, when)
    return ledger.moves


def sync(engine: Engine, moves: list[Movement], rng: random.Random) -> None:
    """In the order the outbox has them, in random batches, some of them twice."""
    ordered = sorted(moves, key=lambda m: (m.occurred_ms, m.account_id, m.version))
    i = 0
    while i < len(ordered):
        batch = ordered[i : i + rng.randint(1, 25)]
        with session(engine) as db:
            apply_movements(db, movements=batch)
        if rng.random() < 0.3:
            with session(engine) as db:
                apply_movements(db, movements=batch)
        i += len(batch)


RANGES = [
    (DAY1, DAY1 + timedelta(days=5)),  # whole days: the roll-up alone
    (DAY1 + timedelta(days=1), DAY1 + timedelta(days=3)),
    (DAY1 + timedelta(hours=5), DAY1 + timedelta(days=3, hours=7)),  # part days at both edges
    (DAY1 - timedelta(days=1), DAY1 + timedelta(days=2, minutes=1)),
    (DAY1 + timedelta(hours=1), DAY1 + timedelta(hours=20)),  # within a day: the ledger
]


def assert_rollup_equals_ledger(engine: Engine) -> None:
    with session(engine) as db:
        for start, end in RANGES:
            for grouping in GROUPINGS:
                fast = usage_history(db, start=start, end=end, grouping=grouping)
                slow = usage_history(db, start=start, end=end, grouping=grouping, rollup=False)
                assert fast == slow, (start, end, grouping)
            for limit in (1, 3, 10):
                fast = top_accounts(db, start=start, end=end, limit=limit)
                assert fast == top_accounts(db, start=start, end=end, limit=limit, rollup=False)


@pytest.mark.parametrize("seed", range(6))
def test_the_rollup_answers_as_the_ledger(engine: Engine, seed: int) -> None:
    moves = random_ledger(seed)
    sync(engine, moves, random.Random(seed))
    with session(engine) as db:
        whole = usage_history(db, start=DAY1, end=DAY1 + timedelta(days=5), grouping="day")
    usage = {m.request_id for m in moves if m.kind in ("hold", "charge", "refund")}
    assert sum(b.requests for b in whole) == len(usage - {None})
    assert_rollup_equals_ledger(engine)
    with session(engine) as db:
        assert rollup_mismatches(db) == []


def test_the_migration_backfills_the_rollup_from_an_existing_ledger(
    engine: Engine, db_url: str
) -> None:
    """Down to 0004 drops the roll-up; up again rebuilds it from the ledger, to the figures
    the sync kept."""
    sync(engine, random_ledger(99), random.Random(99))
    with session(engine) as db:
        kept = db.execute(select(USAGE_DAILY).order_by(*USAGE_DAILY.primary_key)).all()
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    assert "usage_daily" not in inspect(engine).get_table_names()
    upgrade(db_url)
    with session(engine) as db:
        assert db.execute(select(USAGE_DAILY).order_by(*USAGE_DAILY.primary_key)).all() == kept
        assert db.execute(select(func.count()).select_from(USAGE_DAILY)).scalar_one() > 10
    assert_rollup_equals_ledger(engine)
