"""The ledger says what a settled or refunded request held (plan and bonus credits).

A reserve no longer has a ledger row of its own (``hold``): the request's one row, ``charge``
or ``refund``, carries what it held. Rows written before hold 0.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(
            sa.Column("held_plan", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("held_bonus", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("held_bonus")
        batch.drop_column("held_plan")
