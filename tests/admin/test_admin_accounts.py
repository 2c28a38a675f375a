"""gateway.accounts.operations, the operations the API, the CLI and the demo share."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.accounts import operations as accounts
from gateway.accounts.apikeys import hash_key, well_formed
from gateway.errors import Conflict, InvalidRequest, NotFound, Unavailable
from gateway.services import Services, open_services
from gateway.settings import Settings
from store import repository
from store.database import session
from tests.support.admin import admin_client, assert_error


async def test_create_generates_an_id_and_stores_only_the_key_hash(services: Services) -> None:
    created = await accounts.create_account(services, email="x@example.com", reason="signup")
    assert created.account_id.startswith("acct_") and len(created.account_id) == 21
    assert well_formed(created.api_key)
    assert created.state.plan_credits == 5 and created.state.tier == "free"
    with session(services.db) as s:
        record = repository.get_account(s, account_id=created.account_id)
        (key,) = repository.list_api_keys(s, account_id=created.account_id)
    assert record is not None and record.email == "x@example.com"
    assert key.key_hash == hash_key(created.api_key) and key.key_id == created.key_id
    assert created.api_key not in repr(key)


async def test_create_checks_its_arguments(services: Services) -> None:
    with pytest.raises(InvalidRequest, match="'id'"):
        await accounts.create_account(services, account_id="a{b}")
    with pytest.raises(InvalidRequest, match="unknown tier"):
        await accounts.create_account(services, tier="gold")
    with pytest.raises(InvalidRequest, match="months"):
        await accounts.create_account(services, tier="free", months=3)
    with pytest.raises(InvalidRequest, match="months"):
        await accounts.create_account(services, tier="pro", months=37)
    with session(services.db) as s:
        assert repository.all_account_ids(s) == []


async def test_a_duplicate_id_is_a_conflict_and_changes_nothing(services: Services) -> None:
    await accounts.create_account(services, account_id="dup")
    await accounts.grant(services, "dup", 4, reason="test")
    with pytest.raises(Conflict):
        await accounts.create_account(services, account_id="dup", tier="pro")
    state = await accounts.account_state(services, "dup")
    assert (state.tier, state.credits_remaining) == ("free", 9)


async def test_an_id_redis_already_holds_keeps_its_live_state(services: Services) -> None:
    # A store that lost its row while Redis kept the account: Redis is the balance's truth.
    await services.credits.open("orphan", tier="pro")
    await services.credits.grant("orphan", 11, reason="before")
    created = await accounts.create_account(services, account_id="orphan")
    assert (created.state.tier, created.state.bonus_credits) == ("pro", 11)


async def test_operations_on_unknown_accounts_are_not_found(services: Services) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: accounts.account_state(services, "ghost"),
        lambda: accounts.grant(services, "ghost", 1, reason="x"),
        lambda: accounts.change_tier(services, "ghost", "downgrade"),
        lambda: accounts.create_key(services, "ghost"),
        lambda: accounts.list_keys(services, "ghost"),
        lambda: accounts.revoke_key(services, "ghost", "key_1"),
        lambda: accounts.ledger_page(services, "ghost"),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call()


def test_attribution() -> None:
    assert accounts.attributed("admin", "refund #4") == "admin: refund #4"
    assert accounts.attributed("cli", "") == "cli"


@pytest.fixture
async def down(make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[Services, int]]:
    """Services on the same store whose Redis is a closed port, and that port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    services = open_services(make_settings(redis_url=f"redis://127.0.0.1:{closed}/0"))
    yield services, closed
    await services.close()


async def test_redis_down_is_a_503_without_details(
    services: Services, down: tuple[Services, int]
) -> None:
    unreachable, closed = down
    await accounts.create_account(services, account_id="r1")
    with pytest.raises(Unavailable):
        await accounts.grant(unreachable, "r1", 1, reason="x")
    async with admin_client(unreachable) as client:
        response = await client.post("/admin/accounts/r1/grant", json={"credits": 1, "reason": "x"})
    assert_error(response, 503, "unavailable", "retry later")
    assert str(closed) not in response.text


async def test_a_create_redis_could_not_finish_is_restored_on_first_touch(
    services: Services, down: tuple[Services, int]
) -> None:
    unreachable, _ = down
    with pytest.raises(Unavailable):
        await accounts.create_account(unreachable, account_id="half", tier="pro", months=1)
    with session(services.db) as s:
        assert len(repository.list_api_keys(s, account_id="half")) == 1
    state = await accounts.account_state(services, "half")
    assert (state.tier, state.plan_credits, state.subscribed) == ("pro", 100, True)
    with pytest.raises(Conflict):
        await accounts.create_account(services, account_id="half")
