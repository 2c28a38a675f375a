from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from gateway.cli import main
from store import repository
from store.database import alembic_config, create_db_engine, current_revision, session, upgrade
from tests.support.samples import HEAD


def test_upgrade_creates_the_tables_and_is_idempotent(empty_db_url: str) -> None:
    engine = create_db_engine(empty_db_url)
    try:
        assert current_revision(engine) is None
        upgrade(empty_db_url)
        assert current_revision(engine) == HEAD == "0005"
        upgrade(empty_db_url)
        assert current_revision(engine) == HEAD
        tables = set(inspect(engine).get_table_names())
        assert {"accounts", "api_keys", "ledger_entries", "alembic_version"} <= tables
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    engine = create_db_engine(empty_db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []
    finally:
        engine.dispose()


def test_cli_db_upgrade_says_what_it_did(
    empty_db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CREDITGATE_DATABASE_URL", empty_db_url)
    assert main(["db", "upgrade"]) == 0
    assert f"upgraded from an empty database to revision {HEAD}" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert f"already at revision {HEAD}, nothing to do" in capsys.readouterr().out


def test_cli_db_upgrade_fails_cleanly_without_a_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CREDITGATE_DATABASE_URL", "postgresql://u:hunter2@127.0.0.1:1/nowhere")
    assert main(["db", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1:1" in err
    assert "hunter2" not in err


def test_downgrade_to_nothing_and_back(db_url: str) -> None:
    config = alembic_config()
    engine = create_db_engine(db_url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert current_revision(engine) is None
        upgrade(db_url)
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_a_ledger_of_0001_keeps_its_rows_holding_nothing(db_url: str) -> None:
    """0002 adds what a settled request held; rows written before (with their own ``hold``
    rows) read 0 there."""
    config = alembic_config()
    engine = create_db_engine(db_url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO ledger_entries (event_id, account_id, kind, plan_delta, "
                    "bonus_delta, credits_delta, tokens, occurred_at, version, recorded_at) "
                    "VALUES ('3-1-0', 'old', 'hold', -1, 0, -1, 0, :at, 1, :at)"
                ),
                {"at": datetime(2026, 11, 1, tzinfo=UTC)},
            )
        upgrade(db_url)
        with session(engine) as s:
            (row,) = repository.ledger_page(s, account_id="old")
        assert (row.kind, row.credits_delta, row.held_plan, row.held_bonus) == ("hold", -1, 0, 0)
    finally:
        engine.dispose()


def test_keys_of_0003_keep_working_without_limits_and_back(db_url: str) -> None:
    """0004 adds a key's own limits, null for the keys made before; its downgrade drops them
    and keeps the keys."""
    config = alembic_config()
    engine = create_db_engine(db_url)
    try:
        with session(engine) as s:
            repository.create_account(
                s, account_id="acct", email=None, tier="free", plan_credits=5, period_end_ms=0
            )
            repository.create_api_key(
                s,
                key_id="key_1",
                account_id="acct",
                key_hash="a" * 64,
                display_prefix="cg_abcd",
                credit_limit=3,
                routes=["/v1"],
            )
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
        columns = {c["name"] for c in inspect(engine).get_columns("api_keys")}
        assert not columns & {"expires_at", "credit_limit", "requests_per_minute", "routes"}
        upgrade(db_url)
        with session(engine) as s:
            (key,) = repository.list_api_keys(s, account_id="acct")
        assert (key.key_id, key.limited) == ("key_1", False)
    finally:
        engine.dispose()


def test_the_head_read_from_the_files_is_alembics_and_the_database_agrees(
    empty_db_url: str,
) -> None:
    """``head_revision`` and ``current_revision`` skip Alembic (a serving process never loads
    it): they must say what Alembic says."""
    from alembic.script import ScriptDirectory

    from store.database import head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
    upgrade(empty_db_url)
    engine = create_db_engine(empty_db_url)
    try:
        with engine.connect() as connection:
            alembics = MigrationContext.configure(connection).get_current_revision()
        assert current_revision(engine) == alembics == head_revision()
    finally:
        engine.dispose()
