"""The ledger names the route and the key of a movement; indexes for the usage history.

``route`` and ``key_id`` are nullable: movements recorded before them, and every movement
that no request caused (grants, tier changes, resets), have none. The time index serves the
operators' history across accounts; on PostgreSQL it covers the columns the history sums, so
a range is read from the index alone.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

COVERED = ["kind", "credits_delta", "tokens", "request_id", "account_id", "route", "key_id"]


def upgrade() -> None:
    op.add_column("ledger_entries", sa.Column("route", sa.String(), nullable=True))
    op.add_column("ledger_entries", sa.Column("key_id", sa.String(64), nullable=True))
    op.create_index(
        "ix_ledger_entries_time",
        "ledger_entries",
        ["occurred_at"],
        postgresql_include=COVERED,
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_time", table_name="ledger_entries")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("key_id")
        batch.drop_column("route")
