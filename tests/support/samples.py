"""What the store tests build their data from: a fixed clock and a Movement factory."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlmodel import SQLModel

import store.models  # noqa: F401  (the tables to drop)
from store.database import alembic_config, create_db_engine, current_revision, upgrade_engine
from store.records import Movement

T0 = 1_790_000_000_000
"""A fixed Redis clock reading (ms) the movements start at."""
PERIOD_END = T0 + 30 * 86_400_000
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def reset_postgresql(url: str) -> None:
    """Drop the store's tables and Alembic's bookkeeping, so ``upgrade`` starts from nothing."""
    engine = create_db_engine(url)
    try:
        with engine.begin() as connection:
            SQLModel.metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()


def empty_postgresql(url: str) -> None:
    """Migrate to head unless there already (cheap), then empty the store's tables."""
    engine = create_db_engine(url)
    try:
        if current_revision(engine) != HEAD:
            reset_postgresql(url)
            upgrade_engine(engine)
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE ledger_entries, usage_daily, api_keys, accounts"))
    finally:
        engine.dispose()


def make_movement(acct: str, v: int, **fields: object) -> Movement:
    """Version ``v`` of account ``acct``: a 1-credit charge; ``fields`` override any field."""
    values: dict[str, object] = {
        "event_id": f"7-{T0 + v}-{acct}",
        "account_id": acct,
        "kind": "charge",
        "plan_delta": -1,
        "bonus_delta": 0,
        "tokens": 2000,
        "request_id": f"req-{acct}-{v}",
        "reason": None,
        "occurred_ms": T0 + v * 1000,
        "version": v,
        "plan_credits": 100 - v,
        "bonus_credits": 0,
        "tier": "pro",
        "subscribed": True,
        "subscription_ends_ms": PERIOD_END,
        "period_end_ms": PERIOD_END,
        "total_tokens": 2000 * v,
        "monthly_tokens": 2000 * v,
    }
    values.update(fields)
    return Movement(**values)  # type: ignore[arg-type]
