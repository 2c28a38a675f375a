"""An API key's own limits: an expiry, a credit limit per monthly period, a request rate and
the route prefixes it may call.

Every column is nullable, and null means "no limit": the keys made before keep working as
they did. ``routes`` is a JSON array of path prefixes (text, on both databases).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_keys", sa.Column("credit_limit", sa.BigInteger(), nullable=True))
    op.add_column("api_keys", sa.Column("requests_per_minute", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("routes", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("routes")
        batch.drop_column("requests_per_minute")
        batch.drop_column("credit_limit")
        batch.drop_column("expires_at")
