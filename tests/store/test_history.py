"""Usage history in SQL (store/history.py), on SQLite and PostgreSQL: buckets, UTC days,
charged versus refunded, the null bucket, top accounts and the ledger's pages."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from store.database import session
from store.history import (
    UsageBucket,
    day_buckets,
    key_spend,
    ledger_range,
    top_accounts,
    usage_history,
)
from store.records import Movement
from store.repository import apply_movements
from store.timefmt import to_ms
from tests.support.samples import make_movement

DAY1 = datetime(2026, 11, 29, tzinfo=UTC)


def at(when: datetime, acct: str, v: int, **fields: object) -> Movement:
    fields.setdefault("tokens", 0)
    return make_movement(acct, v, event_id=f"e-{acct}-{v}", occurred_ms=to_ms(when), **fields)


def request(
    when: datetime,
    acct: str,
    v: int,
    rid: str,
    *,
    held: int,
    used: int,
    tokens: int,
    **more: object,
) -> list[Movement]:
    """A metered request as the engine writes it: the hold, a refund of what it did not use,
    the charge with the tokens."""
    moves = [at(when, acct, v, kind="hold", plan_delta=-held, tokens=0, request_id=rid, **more)]
    if held > used:
        moves.append(
            at(
                when,
                acct,
                v + 1,
                kind="refund",
                plan_delta=held - used,
                tokens=0,
                request_id=rid,
                **more,
            )
        )
    moves.append(
        at(when, acct, v + 2, kind="charge", plan_delta=0, tokens=tokens, request_id=rid, **more)
    )
    return moves


def load(engine: Engine, moves: list[Movement]) -> None:
    with session(engine) as db:
        apply_movements(db, movements=moves)


def history(engine: Engine, grouping: str, account: str | None = "a") -> list[UsageBucket]:
    with session(engine) as db:
        return usage_history(
            db,
            start=DAY1,
            end=DAY1 + timedelta(days=3),
            grouping=grouping,  # type: ignore[arg-type]
            account_id=account,
        )


def test_days_are_utc_days_and_sum_charged_refunded_tokens(engine: Engine) -> None:
    late = DAY1 + timedelta(hours=23, minutes=59, seconds=59, milliseconds=999)
    load(
        engine,
        [
            *request(late, "a", 1, "r1", held=5, used=2, tokens=3500),
            *request(late + timedelta(milliseconds=1), "a", 10, "r2", held=1, used=1, tokens=10),
            # A failed request: held and given back in full.
            at(DAY1 + timedelta(hours=1), "a", 20, kind="hold", plan_delta=-3, request_id="r3"),
            at(DAY1 + timedelta(hours=1), "a", 21, kind="refund", plan_delta=3, request_id="r3"),
            # Not usage: a grant and a reset.
            at(DAY1 + timedelta(hours=2), "a", 30, kind="grant", bonus_delta=50, request_id="g"),
            at(DAY1 + timedelta(hours=2), "a", 31, kind="reset", plan_delta=-7, request_id=None),
            # Another account, and one movement outside the range.
            *request(DAY1, "b", 1, "rb", held=4, used=4, tokens=1),
            at(DAY1 - timedelta(milliseconds=1), "a", 40, kind="charge", plan_delta=-9),
        ],
    )
    assert history(engine, "day") == [
        UsageBucket("2026-11-29", requests=2, credits_charged=2, credits_refunded=6, tokens=3500),
        UsageBucket("2026-11-30", requests=1, credits_charged=1, credits_refunded=0, tokens=10),
    ]
    everyone = history(engine, "day", account=None)
    assert everyone[0] == UsageBucket("2026-11-29", 3, 6, 6, 3501)


def test_the_day_is_utc_whatever_the_sessions_time_zone(engine: Engine) -> None:
    load(engine, request(DAY1 + timedelta(hours=23), "a", 1, "r", held=1, used=1, tokens=5))
    with session(engine) as db:
        if db.connection().dialect.name == "postgresql":
            db.execute(text("SET TIME ZONE 'Asia/Tokyo'"))
        buckets = usage_history(
            db, start=DAY1, end=DAY1 + timedelta(days=1), grouping="day", account_id="a"
        )
    assert [b.bucket for b in buckets] == ["2026-11-29"]


def test_route_and_key_groups_put_unnamed_movements_in_the_null_bucket(engine: Engine) -> None:
    load(
        engine,
        [
            *request(DAY1, "a", 1, "r1", held=2, used=2, tokens=1, route="/api/x/", key_id="k1"),
            *request(DAY1, "a", 10, "r2", held=3, used=1, tokens=2, route="/api/y/", key_id="k1"),
            *request(DAY1, "a", 20, "r3", held=1, used=1, tokens=4),
        ],
    )
    by_route = {b.bucket: b for b in history(engine, "route")}
    assert by_route == {
        "/api/x/": UsageBucket("/api/x/", 1, 2, 0, 1),
        "/api/y/": UsageBucket("/api/y/", 1, 1, 2, 2),
        None: UsageBucket(None, 1, 1, 0, 4),
    }
    by_key = {b.bucket: b for b in history(engine, "key")}
    assert by_key == {
        "k1": UsageBucket("k1", 2, 3, 2, 3),
        None: UsageBucket(None, 1, 1, 0, 4),
    }


def test_one_event_per_request_counts_the_same(engine: Engine) -> None:
    """The settle may write one movement per request (its charge, with the credits)."""
    load(
        engine,
        [at(DAY1, "a", 1, kind="charge", plan_delta=-2, bonus_delta=-1, tokens=9, bonus_credits=0)],
    )
    assert history(engine, "day") == [UsageBucket("2026-11-29", 1, 3, 0, 9)]


def test_key_spend_sums_each_keys_charges_since_a_time(engine: Engine) -> None:
    """What a key's credit limit counts: its charges (one row a request, the credits the
    account lost by it), not refunds nor grants, nor another account's, nor before ``since``."""
    later = DAY1 + timedelta(days=1)
    charge = {"kind": "charge", "key_id": "k1", "route": "/r/"}
    load(
        engine,
        [
            at(DAY1, "a", 1, plan_delta=-4, request_id="old", **charge),
            at(later, "a", 2, plan_delta=-2, bonus_delta=-1, request_id="r1", **charge),
            at(later, "a", 3, plan_delta=-1, request_id="r2", **{**charge, "key_id": "k2"}),
            at(later, "a", 4, kind="refund", plan_delta=0, request_id="r3", key_id="k1"),
            at(later, "a", 5, kind="grant", bonus_delta=9),
            at(later, "a", 6, plan_delta=-5, request_id="r4", kind="charge"),  # no key
            at(later, "b", 1, plan_delta=-7, request_id="r5", **charge),
        ],
    )
    with session(engine) as db:
        assert key_spend(db, account_id="a", since=later) == {"k1": 3, "k2": 1}
        assert key_spend(db, account_id="a", since=DAY1) == {"k1": 7, "k2": 1}
        assert key_spend(db, account_id="c", since=DAY1) == {}


def test_top_accounts_by_spend(engine: Engine) -> None:
    load(
        engine,
        [
            *request(DAY1, "a", 1, "ra", held=2, used=2, tokens=1),
            *request(DAY1, "b", 1, "rb", held=9, used=5, tokens=1),
            *request(DAY1, "c", 1, "rc", held=2, used=2, tokens=1),
        ],
    )
    with session(engine) as db:
        top = top_accounts(db, start=DAY1, end=DAY1 + timedelta(days=1), limit=2)
        with pytest.raises(ValueError):
            top_accounts(db, start=DAY1, end=DAY1, limit=0)
    assert [(t.bucket, t.credits_charged) for t in top] == [("b", 5), ("a", 2)]


def test_ledger_range_pages_in_time_order(engine: Engine) -> None:
    moves = [at(DAY1 + timedelta(seconds=i // 2), "a", i, route="/r/") for i in range(1, 8)]
    load(engine, [*moves, at(DAY1, "b", 1)])
    seen: list[str] = []
    after = None
    with session(engine) as db:
        while True:
            page = ledger_range(
                db, start=DAY1, end=DAY1 + timedelta(days=1), account_id="a", after=after, limit=3
            )
            if not page:
                break
            seen.extend(r.event_id for r in page)
            after = page[-1]
    assert seen == [m.event_id for m in moves]
    with session(engine) as db:
        first = ledger_range(db, start=DAY1, end=DAY1 + timedelta(days=1), limit=1)[0]
    assert first.route is None or first.route == "/r/"
    assert first.occurred_at.tzinfo is not None


def test_day_buckets_fill_missing_days_with_zeros() -> None:
    days = [date(2026, 11, 29), date(2026, 11, 30), date(2026, 12, 1)]
    found = [UsageBucket("2026-11-30", 1, 2, 0, 3)]
    assert day_buckets(found, days) == [
        UsageBucket("2026-11-29", 0, 0, 0, 0),
        UsageBucket("2026-11-30", 1, 2, 0, 3),
        UsageBucket("2026-12-01", 0, 0, 0, 0),
    ]
