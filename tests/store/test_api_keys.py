from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine

from store import repository
from store.database import session
from store.errors import DuplicateApiKey, RevokedApiKey, UnknownAccount
from tests.support.samples import PERIOD_END

HASH_A = "a" * 64
HASH_B = "b" * 64


@pytest.fixture
def account(engine: Engine) -> str:
    with session(engine) as s:
        repository.create_account(
            s, account_id="acct", email=None, tier="free", plan_credits=5, period_end_ms=PERIOD_END
        )
    return "acct"


def add_key(engine: Engine, key_id: str, key_hash: str, account_id: str = "acct") -> None:
    with session(engine) as s:
        repository.create_api_key(
            s,
            key_id=key_id,
            account_id=account_id,
            key_hash=key_hash,
            display_prefix="cg_abcd",
            name=f"{key_id} name",
        )


def test_create_find_and_list_keys(engine: Engine, account: str) -> None:
    add_key(engine, "key_1", HASH_A)
    add_key(engine, "key_2", HASH_B)
    with session(engine) as s:
        found = repository.find_api_key(s, key_hash=HASH_B)
        assert repository.find_api_key(s, key_hash="c" * 64) is None
        keys = repository.list_api_keys(s, account_id=account)
        assert repository.list_api_keys(s, account_id="nobody") == []
    assert found is not None
    assert (found.id, found.account_id, found.display_prefix, found.name) == (
        "key_2",
        account,
        "cg_abcd",
        "key_2 name",
    )
    assert found.created_at.tzinfo is UTC
    assert (found.revoked, found.revoked_at, found.last_used_at) == (False, None, None)
    assert [k.key_id for k in keys] == ["key_1", "key_2"]


def test_keys_need_an_account_and_a_unique_hash(engine: Engine, account: str) -> None:
    with pytest.raises(UnknownAccount):
        add_key(engine, "key_1", HASH_A, account_id="nobody")
    add_key(engine, "key_1", HASH_A)
    with pytest.raises(DuplicateApiKey):
        add_key(engine, "key_2", HASH_A)
    with pytest.raises(DuplicateApiKey):
        add_key(engine, "key_1", HASH_B)


def test_revoke_is_idempotent_and_keeps_the_key_findable(engine: Engine, account: str) -> None:
    add_key(engine, "key_1", HASH_A)
    with session(engine) as s:
        first = repository.revoke_api_key(s, account_id=account, key_id="key_1")
    with session(engine) as s:
        again = repository.revoke_api_key(s, account_id=account, key_id="key_1")
        assert repository.revoke_api_key(s, account_id=account, key_id="key_9") is None
        assert repository.revoke_api_key(s, account_id="other", key_id="key_1") is None
        found = repository.find_api_key(s, key_hash=HASH_A)
    assert first is not None and first.revoked and first.revoked_at is not None
    assert again is not None and again.revoked_at == first.revoked_at
    assert found is not None and found.revoked_at == first.revoked_at
    assert first.revoked_at.tzinfo is UTC


def test_touch_records_the_latest_use_only(engine: Engine, account: str) -> None:
    add_key(engine, "key_1", HASH_A)
    add_key(engine, "key_2", HASH_B)
    later = datetime(2026, 11, 24, 12, 0, 0, 123000, tzinfo=UTC)
    # The same instant in another zone: stored and read back as UTC.
    later_elsewhere = later.astimezone(timezone(timedelta(hours=5, minutes=30)))
    with session(engine) as s:
        repository.touch_api_keys(s, used={"key_1": later_elsewhere, "key_unknown": later})
        repository.touch_api_keys(s, used={})
    with session(engine) as s:
        repository.touch_api_keys(
            s, used={"key_1": later - timedelta(hours=1), "key_2": later - timedelta(days=1)}
        )
    with session(engine) as s:
        one = repository.find_api_key(s, key_hash=HASH_A)
        two = repository.find_api_key(s, key_hash=HASH_B)
    assert one is not None and one.last_used_at == later and one.last_used_at.tzinfo is UTC
    assert two is not None and two.last_used_at == later - timedelta(days=1)


def test_a_use_after_the_revocation_is_not_recorded(engine: Engine, account: str) -> None:
    add_key(engine, "key_1", HASH_A)
    with session(engine) as s:
        revoked = repository.revoke_api_key(s, account_id=account, key_id="key_1")
    assert revoked is not None and revoked.revoked_at is not None
    before = revoked.revoked_at - timedelta(seconds=2)
    with session(engine) as s:  # a replica's batch: one use before, one just after the revoke
        repository.touch_api_keys(s, used={"key_1": before})
        repository.touch_api_keys(s, used={"key_1": revoked.revoked_at + timedelta(seconds=1)})
    with session(engine) as s:
        found = repository.find_api_key(s, key_hash=HASH_A)
    assert found is not None and found.last_used_at == before
    assert found.revoked_at is not None and found.last_used_at <= found.revoked_at


def test_a_key_keeps_its_limits(engine: Engine, account: str) -> None:
    expires = datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    with session(engine) as s:
        made = repository.create_api_key(
            s,
            key_id="key_1",
            account_id=account,
            key_hash=HASH_A,
            display_prefix="cg_abcd",
            name="ci",
            expires_at=expires,
            credit_limit=10**12,
            requests_per_minute=30,
            routes=["/api/projects", "/api/review/x"],
        )
    add_key(engine, "key_2", HASH_B)
    with session(engine) as s:
        found = repository.find_api_key(s, key_hash=HASH_A)
        plain = repository.find_api_key(s, key_hash=HASH_B)
    assert found == made
    assert found is not None and found.limited
    assert found.expires_at == expires and found.expires_at.tzinfo is UTC
    assert (found.credit_limit, found.requests_per_minute) == (10**12, 30)
    assert found.routes == ("/api/projects", "/api/review/x")
    assert plain is not None and not plain.limited
    assert (plain.expires_at, plain.credit_limit, plain.requests_per_minute, plain.routes) == (
        None,
        None,
        None,
        None,
    )


def test_update_changes_only_what_it_names_and_none_clears(engine: Engine, account: str) -> None:
    add_key(engine, "key_1", HASH_A)
    with session(engine) as s:
        first = repository.update_api_key(
            s,
            account_id=account,
            key_id="key_1",
            changes={"credit_limit": 7, "routes": ["/v1"], "requests_per_minute": 5},
        )
    with session(engine) as s:
        second = repository.update_api_key(
            s, account_id=account, key_id="key_1", changes={"credit_limit": None, "name": "new"}
        )
    with session(engine) as s:
        stored = repository.find_api_key(s, key_hash=HASH_A)
    assert first is not None and (first.credit_limit, first.routes) == (7, ("/v1",))
    assert second is not None and second == stored
    assert (second.name, second.credit_limit, second.requests_per_minute, second.routes) == (
        "new",
        None,
        5,
        ("/v1",),
    )
    with session(engine) as s:
        cleared = repository.update_api_key(
            s,
            account_id=account,
            key_id="key_1",
            changes={"routes": None, "requests_per_minute": None},
        )
    assert cleared is not None and not cleared.limited


def test_update_refuses_a_revoked_key_and_another_accounts(engine: Engine, account: str) -> None:
    add_key(engine, "key_1", HASH_A)
    with session(engine) as s:
        assert repository.update_api_key(s, account_id="other", key_id="key_1", changes={}) is None
        assert repository.update_api_key(s, account_id=account, key_id="key_9", changes={}) is None
        with pytest.raises(ValueError, match="key_hash"):
            repository.update_api_key(
                s, account_id=account, key_id="key_1", changes={"key_hash": HASH_B}
            )
        repository.revoke_api_key(s, account_id=account, key_id="key_1")
    with session(engine) as s, pytest.raises(RevokedApiKey, match="key_1"):
        repository.update_api_key(s, account_id=account, key_id="key_1", changes={"name": "x"})
    with session(engine) as s:
        found = repository.find_api_key(s, key_hash=HASH_A)
    assert found is not None and found.name == "key_1 name"
