"""A database that cannot be reached shows up as StoreUnavailable, never a driver error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from store import repository
from store.database import create_db_engine, session, upgrade
from store.errors import StoreUnavailable

DEAD_URLS = [
    "postgresql://postgres:secret@127.0.0.1:1/nowhere",
    "sqlite:////nonexistent-directory/creditgate.db",
]


@pytest.fixture(params=DEAD_URLS, ids=["postgresql", "sqlite"])
def dead_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    engine = create_db_engine(request.param)
    yield engine
    engine.dispose()


def test_reads_and_writes_raise_store_unavailable(dead_engine: Engine) -> None:
    with pytest.raises(StoreUnavailable) as caught, session(dead_engine) as s:
        repository.get_account(s, account_id="acct")
    assert "secret" not in str(caught.value)
    with pytest.raises(StoreUnavailable), session(dead_engine) as s:
        repository.apply_movements(s, movements=[])
        repository.touch_api_keys(s, used={})
        repository.ledger_totals(s)


@pytest.mark.parametrize("url", DEAD_URLS, ids=["postgresql", "sqlite"])
def test_upgrade_raises_store_unavailable(url: str) -> None:
    with pytest.raises(StoreUnavailable):
        upgrade(url)
