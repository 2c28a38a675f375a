"""``store.direct`` answers what the SQLModel repository answers, on SQLite and PostgreSQL:
the serving path's statements written twice must not drift apart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from store import repository
from store.database import create_db_engine, current_revision, head_revision, session, upgrade
from store.direct import READERS, DirectStore, _Lines, postgresql_parameters
from store.errors import SchemaOutdated, StoreUnavailable
from tests.support.samples import PERIOD_END

HASH_A = "a" * 64
HASH_B = "b" * 64
DEAD_URLS = [
    "postgresql://postgres:secret@127.0.0.1:1/nowhere",
    "sqlite:////nonexistent-directory/creditgate.db",
]


@pytest.fixture
def account(engine: Engine) -> str:
    with session(engine) as s:
        repository.create_account(
            s, account_id="acct", email=None, tier="free", plan_credits=5, period_end_ms=PERIOD_END
        )
    return "acct"


def add_key(engine: Engine, key_id: str, key_hash: str) -> None:
    with session(engine) as s:
        repository.create_api_key(
            s, key_id=key_id, account_id="acct", key_hash=key_hash, display_prefix="cg_abcd"
        )


@pytest.fixture
def direct(db_url: str) -> Iterator[DirectStore]:
    store = DirectStore.for_url(db_url)
    assert store is not None
    yield store
    store.close()


def test_a_key_reads_as_the_repository_reads_it(
    engine: Engine, account: str, direct: DirectStore
) -> None:
    expires = datetime(2027, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    with session(engine) as s:
        repository.create_api_key(
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
        repository.touch_api_keys(s, used={"key_1": datetime(2026, 11, 1, tzinfo=UTC)})
    add_key(engine, "key_2", HASH_B)
    with session(engine) as s:
        repository.revoke_api_key(s, account_id=account, key_id="key_2")
        orm = [repository.find_api_key(s, key_hash=h) for h in (HASH_A, HASH_B, "c" * 64)]
    found = [direct.find_api_key(key_hash=h) for h in (HASH_A, HASH_B, "c" * 64)]
    assert found == orm
    limited, revoked, missing = found
    assert limited is not None and limited.expires_at == expires and limited.limited
    assert limited.created_at.tzinfo is UTC and limited.routes == ("/api/projects", "/api/review/x")
    assert revoked is not None and revoked.revoked and not revoked.limited
    assert missing is None


def test_touch_keeps_the_latest_use_before_the_revocation(
    engine: Engine, account: str, direct: DirectStore
) -> None:
    add_key(engine, "key_1", HASH_A)
    add_key(engine, "key_2", HASH_B)
    later = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
    elsewhere = later.astimezone(timezone(timedelta(hours=5, minutes=30)))
    direct.touch_api_keys(used={"key_1": elsewhere, "key_unknown": later})
    direct.touch_api_keys(used={})
    direct.touch_api_keys(used={"key_1": later - timedelta(hours=1), "key_2": later})
    with session(engine) as s:
        revoked = repository.revoke_api_key(s, account_id=account, key_id="key_2")
    assert revoked is not None and revoked.revoked_at is not None
    direct.touch_api_keys(used={"key_2": revoked.revoked_at + timedelta(seconds=1)})
    # The repository's own touch compares with what the direct one wrote (SQLite: as text).
    with session(engine) as s:
        repository.touch_api_keys(s, used={"key_1": later - timedelta(microseconds=1)})
        one = repository.find_api_key(s, key_hash=HASH_A)
        two = repository.find_api_key(s, key_hash=HASH_B)
    assert one is not None and one.last_used_at == later
    assert two is not None and two.last_used_at == later
    direct.touch_api_keys(used={"key_1": later + timedelta(microseconds=1)})
    again = direct.find_api_key(key_hash=HASH_A)
    assert again is not None and again.last_used_at == later + timedelta(microseconds=1)


def test_the_schema_is_checked_as_the_engine_checks_it(
    empty_db_url: str, engine_for: Engine
) -> None:
    direct = DirectStore.for_url(empty_db_url)
    assert direct is not None
    try:
        assert direct.current_revision() is None is current_revision(engine_for)
        with pytest.raises(SchemaOutdated):
            direct.check_schema()
        upgrade(empty_db_url)
        assert direct.check_schema() == head_revision() == current_revision(engine_for)
    finally:
        direct.close()


@pytest.fixture
def engine_for(empty_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(empty_db_url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_connection_the_database_dropped_is_replaced(
    engine: Engine, account: str, direct: DirectStore
) -> None:
    add_key(engine, "key_1", HASH_A)
    assert direct.find_api_key(key_hash=HASH_A) is not None
    with engine.begin() as connection:  # as a restarted server would: every other session ends
        ended = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert ended >= 1
    found = direct.find_api_key(key_hash=HASH_A)
    assert found is not None and found.key_id == "key_1"


@pytest.mark.parametrize("url", DEAD_URLS, ids=["postgresql", "sqlite"])
def test_an_unreachable_store_is_unavailable_without_its_password(url: str) -> None:
    direct = DirectStore.for_url(url)
    assert direct is not None
    with pytest.raises(StoreUnavailable) as caught:
        direct.find_api_key(key_hash=HASH_A)
    assert "secret" not in str(caught.value)
    with pytest.raises(StoreUnavailable):
        direct.touch_api_keys(used={"key_1": datetime.now(UTC)})
    with pytest.raises(StoreUnavailable):
        direct.check_schema()


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///:memory:", "sqlite:///store.db?timeout=3", "mysql://h/db", "nothing"],
)
def test_urls_only_the_engine_can_serve_have_no_direct_store(url: str) -> None:
    assert DirectStore.for_url(url) is None


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_lookups_run_side_by_side_on_a_few_connections(
    engine: Engine, account: str, direct: DirectStore
) -> None:
    """A cold key cache's lookups do not queue behind one connection: READERS of them are in
    the store at once (each waits at a barrier for the others, inside its statement's turn),
    and the connections are kept for the next ones."""
    add_key(engine, "key_1", HASH_A)
    barrier = threading.Barrier(READERS, timeout=10)
    connections: set[int] = set()

    def lookup(connection: Any) -> object:
        connections.add(id(connection))
        barrier.wait()  # broken (an error) if the others cannot run meanwhile
        return connection.execute("SELECT 1").fetchone()

    with ThreadPoolExecutor(READERS) as pool:
        answers = list(pool.map(lambda _: direct._reads.run(lookup), range(READERS)))
    assert answers == [(1,)] * READERS and len(connections) == READERS
    for _ in range(3):
        assert direct.find_api_key(key_hash=HASH_A) is not None
    direct._reads.run(lambda c: connections.add(id(c)))
    assert len(connections) == READERS  # reused, none opened again


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres:50%off@127.0.0.1:5432/test",  # a literal % kept
        "postgresql+psycopg://postgres:a/b@127.0.0.1/db",  # a / in the password
        "postgresql+psycopg://u:p%40x@h:5/d?sslmode=require&application_name=cg",
        "postgresql+psycopg://u@/d?host=/var/run/postgresql",
        "postgresql+psycopg://u@[::1]:5432/d",
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg:///d",
    ],
)
def test_a_postgresql_url_means_what_it_means_to_the_engine(url: str) -> None:
    """libpq reads a URL more strictly than SQLAlchemy (a % or / in the password): the parts
    go to psycopg as the engine's dialect gives them."""
    engine = create_engine(url)
    _, expected = engine.dialect.create_connect_args(engine.url)
    expected = {k: str(v) for k, v in expected.items() if k != "context"}
    assert postgresql_parameters(url.split("://", 1)[1]) == expected


def test_several_hosts_are_left_to_the_engine() -> None:
    url = "postgresql+psycopg://u@/d?host=a:1&host=b:2"
    assert postgresql_parameters(url.split("://", 1)[1]) is None
    assert DirectStore.for_url(url) is None


def test_a_password_with_a_percent_sign_connects() -> None:
    """Before, libpq refused it as a bad percent-encoding and the worker failed to start."""
    direct = DirectStore.for_url("postgresql://postgres:50%off@127.0.0.1:1/nowhere")
    assert direct is not None
    with pytest.raises(StoreUnavailable) as refused:
        direct.check_schema()  # nothing listens on port 1: unavailable, not a crash
    assert "50%off" not in str(refused.value)


class Fake:
    """A DB-API connection that only knows whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_caller_past_the_connections_gives_up_and_a_closed_store_keeps_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store that stopped answering holds its connections: the next caller is told so
    (``StoreUnavailable``) instead of waiting for ever and taking a thread with it. A
    connection whose work ends after ``close`` is closed, not kept."""
    monkeypatch.setattr("store.direct.WAIT_S", 0.05)
    lines = _Lines(Fake, (), 1)
    busy, release = threading.Event(), threading.Event()

    def hang(connection: Fake) -> Fake:
        busy.set()
        release.wait(10)
        return connection

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(lines.run, hang)
        assert busy.wait(10)
        with pytest.raises(StoreUnavailable, match="no connection free"):
            lines.run(lambda connection: connection)
        lines.close()
        release.set()
        assert held.result().closed
