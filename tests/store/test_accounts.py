from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from store import repository
from store.database import session
from store.errors import DuplicateAccount
from tests.support.samples import PERIOD_END


def create(s: Session, account_id: str, **fields: object) -> object:
    values: dict[str, object] = {
        "email": f"{account_id}@example.com",
        "tier": "free",
        "plan_credits": 5,
        "period_end_ms": PERIOD_END,
    }
    values.update(fields)
    return repository.create_account(s, account_id=account_id, **values)  # type: ignore[arg-type]


def test_create_and_get_an_account(engine: Engine) -> None:
    with session(engine) as s:
        create(
            s,
            "acct",
            tier="pro",
            plan_credits=100,
            subscribed=True,
            subscription_ends_ms=PERIOD_END + 1,
        )
    with session(engine) as s:
        record = repository.get_account(s, account_id="acct")
        assert repository.get_account(s, account_id="other") is None
    assert record is not None
    assert (record.id, record.email, record.tier) == ("acct", "acct@example.com", "pro")
    assert (record.plan_credits, record.bonus_credits, record.credits_remaining) == (100, 0, 100)
    assert (record.total_tokens, record.monthly_tokens, record.version) == (0, 0, 0)
    assert record.subscribed and record.subscription_ends_ms == PERIOD_END + 1
    assert record.period_end_ms == PERIOD_END
    for moment in (
        record.period_end,
        record.subscription_ends_at,
        record.created_at,
        record.updated_at,
    ):
        assert moment is not None and moment.tzinfo is UTC


def test_an_existing_id_is_refused(engine: Engine) -> None:
    with session(engine) as s:
        create(s, "acct")
    with pytest.raises(DuplicateAccount), session(engine) as s:
        create(s, "acct", email="someone-else@example.com")
    with session(engine) as s:
        record = repository.get_account(s, account_id="acct")
    assert record is not None and record.email == "acct@example.com"


def test_list_accounts_pages_by_id(engine: Engine) -> None:
    with session(engine) as s:
        for name in ("c", "a", "e", "b", "d"):
            create(s, name)
    with session(engine) as s:
        first = repository.list_accounts(s, limit=2)
        second = repository.list_accounts(s, limit=2, after=first[-1].account_id)
        rest = repository.list_accounts(s, after=second[-1].account_id)
        assert repository.all_account_ids(s) == ["a", "b", "c", "d", "e"]
        with pytest.raises(ValueError):
            repository.list_accounts(s, limit=0)
    assert [r.account_id for r in first + second + rest] == ["a", "b", "c", "d", "e"]


def test_accounts_are_found_by_text_in_their_id_or_email_among_thousands(
    engine: Engine,
) -> None:
    """The console's search is the store's: past the first thousand ids too, any case, and
    ``%`` / ``_`` in the text match only themselves."""
    with session(engine) as s:
        for i in range(1_200):
            create(s, f"acct-{i:04d}", email=f"user{i}@example.com")
        create(s, "Zed_Corp", email="Billing@ZED.example")
        create(s, "zedcorp", email=None)
    with session(engine) as s:
        late = repository.list_accounts(s, containing="acct-1150")
        by_email = repository.list_accounts(s, containing="user1199@")
        cased = repository.list_accounts(s, containing="billing@zed")
        underscore = repository.list_accounts(s, containing="d_c")
        percent = repository.list_accounts(s, containing="%")
        many = repository.list_accounts(s, containing="acct-11", limit=5)
    assert [a.account_id for a in late] == ["acct-1150"]
    assert [a.account_id for a in by_email] == ["acct-1199"]
    assert [a.account_id for a in cased] == ["Zed_Corp"]
    assert [a.account_id for a in underscore] == ["Zed_Corp"]  # not "zedcorp"
    assert percent == []
    assert [a.account_id for a in many] == [f"acct-110{i}" for i in range(5)]


def test_ended_subscriptions_pages_by_id(engine: Engine) -> None:
    with session(engine) as s:
        create(s, "b-ended", tier="pro", subscribed=True, subscription_ends_ms=PERIOD_END)
        create(s, "a-ended", tier="pro", subscribed=True, subscription_ends_ms=PERIOD_END - 5)
        create(s, "c-later", tier="pro", subscribed=True, subscription_ends_ms=PERIOD_END + 1)
        create(s, "d-open-ended", tier="pro", subscribed=True)
        create(s, "e-free", subscribed=False)
    with session(engine) as s:
        found = repository.ended_subscriptions(s, ended_by_ms=PERIOD_END)
        first = repository.ended_subscriptions(s, ended_by_ms=PERIOD_END, limit=1)
        rest = repository.ended_subscriptions(s, ended_by_ms=PERIOD_END, after=first[-1])
    assert found == ["a-ended", "b-ended"]
    assert (first, rest) == (["a-ended"], ["b-ended"])
