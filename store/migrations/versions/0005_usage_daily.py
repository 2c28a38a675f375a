"""The daily usage roll-up: the ledger's usage summed per UTC day, account, route and key.

The operators' history across accounts reads it instead of the ledger (see
``store/usage_daily.py`` for what a row sums and how requests are counted). Backfilled here
from the ledger in one ``INSERT .. SELECT`` grouped by row: requests are the distinct request
ids of each row, as the sync worker keeps them from now on.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# The same sums as store.history's ledger query, per roll-up row.
BACKFILL = """
INSERT INTO usage_daily (day, account_id, route, key_id, requests, credits_charged,
    credits_refunded, tokens)
SELECT {day}, account_id, COALESCE(route, ''), COALESCE(key_id, ''),
    COUNT(DISTINCT request_id),
    SUM(CASE WHEN kind <> 'refund' AND credits_delta < 0 THEN -credits_delta ELSE 0 END)
        - SUM(CASE WHEN kind = 'refund' THEN credits_delta ELSE 0 END),
    SUM(CASE WHEN kind = 'refund' THEN credits_delta ELSE 0 END),
    SUM(tokens)
FROM ledger_entries
WHERE kind IN ('hold', 'charge', 'refund')
GROUP BY 1, 2, 3, 4
"""
DAYS = {
    # The UTC calendar day whatever the session's TimeZone.
    "postgresql": "CAST(timezone('UTC', occurred_at) AS DATE)",
    # SQLite keeps the UTC wall time as text: its date() is the UTC day.
    "sqlite": "date(occurred_at)",
}


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("route", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("credits_charged", sa.BigInteger(), nullable=False),
        sa.Column("credits_refunded", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "account_id", "route", "key_id"),
    )
    op.execute(BACKFILL.format(day=DAYS[op.get_bind().dialect.name]))


def downgrade() -> None:
    op.drop_table("usage_daily")
