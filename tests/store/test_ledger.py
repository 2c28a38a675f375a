"""ledger_page: newest first, a cursor that resumes exactly after the previous page."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from store import repository
from store.database import session
from store.errors import InvalidCursor
from store.records import Movement
from tests.support.samples import T0, make_movement


@pytest.fixture
def history(engine: Engine) -> list[Movement]:
    """Twelve movements of 'acct', newest last; some share a millisecond, and one of them
    arrived from another outbox bucket with an older stream id (ids do not sort by time)."""
    events = [make_movement("acct", v, occurred_ms=T0 + (v // 3) * 1000) for v in range(1, 13)]
    events[7] = make_movement("acct", 8, occurred_ms=events[7].occurred_ms, event_id="0-1-0")
    others = [make_movement("other", v) for v in range(1, 4)]
    with session(engine) as s:
        repository.apply_movements(s, movements=others + events[::-1])
    return events


def test_pages_are_newest_first_and_the_cursor_resumes_after_the_last(
    engine: Engine, history: list[Movement]
) -> None:
    pages: list[list[str]] = []
    before = None
    with session(engine) as s:
        while True:
            page = repository.ledger_page(s, account_id="acct", limit=5, before=before)
            if not page:
                break
            pages.append([e.event_id for e in page])
            before = page[-1].event_id
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [e for p in pages for e in p] == [m.event_id for m in reversed(history)]


def test_the_first_page_and_the_default_limit(engine: Engine, history: list[Movement]) -> None:
    with session(engine) as s:
        page = repository.ledger_page(s, account_id="acct")
        assert repository.ledger_page(s, account_id="nobody") == []
    assert [e.version for e in page] == list(range(12, 0, -1))
    assert all(e.account_id == "acct" for e in page)


def test_a_cursor_of_another_account_or_unknown_is_refused(
    engine: Engine, history: list[Movement]
) -> None:
    with session(engine) as s:
        with pytest.raises(InvalidCursor):
            repository.ledger_page(s, account_id="acct", before=make_movement("other", 1).event_id)
        with pytest.raises(InvalidCursor):
            repository.ledger_page(s, account_id="acct", before="no-such-event")


def test_totals_per_account_and_for_one(engine: Engine) -> None:
    with session(engine) as s:
        repository.apply_movements(
            s,
            movements=[
                make_movement("a", 1, kind="open", plan_delta=5, tokens=0),
                make_movement("a", 2, kind="grant", plan_delta=0, bonus_delta=10, tokens=0),
                make_movement("a", 3, plan_delta=-1, bonus_delta=0),
                make_movement("a", 4, kind="refund", plan_delta=1, bonus_delta=0, tokens=0),
                make_movement("b", 1, kind="open", plan_delta=100, tokens=0),
            ],
        )
    with session(engine) as s:
        assert repository.ledger_totals(s) == {"a": (5, 10), "b": (100, 0)}
        assert repository.ledger_totals(s, account_id="b") == {"b": (100, 0)}
        assert repository.ledger_totals(s, account_id="nobody") == {}
