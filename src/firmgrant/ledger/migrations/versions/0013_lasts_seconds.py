"""Sorting by when access ends without sorting every grant: how long each grant lasts.

A grant's access ends at Salesforce's expiry or at ``granted_at`` plus the vendor's cap,
whichever is sooner. Sorting by that expression sorted every matching grant on each list page;
the ledger now keeps ``grants.lasts_seconds`` (``lifecycle.lasts_seconds``), so the few grants
the cap ends are found by their own index and the rest are read in ``expires_at`` order
(``queries.by_end``). Existing grants are filled here.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Whole seconds rounded up, as lifecycle.lasts_seconds; SQLite's julianday is exact to the ms.
FILL = {
    "sqlite": "CAST(ROUND((julianday(expires_at) - julianday(granted_at)) * 86400000) AS INTEGER)"
    " / 1000 + (CAST(ROUND((julianday(expires_at) - julianday(granted_at)) * 86400000)"
    " AS INTEGER) % 1000 > 0)",
    "postgresql": "CEIL(EXTRACT(EPOCH FROM expires_at - granted_at))::bigint",
}


def upgrade() -> None:
    bind = op.get_bind()
    # NOT NULL from the start (SQLite cannot add it later without copying the table): rows
    # are filled next, and the ledger writes every grant's own value.
    op.add_column(
        "grants", sa.Column("lasts_seconds", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.execute(f"UPDATE grants SET lasts_seconds = {FILL[bind.dialect.name]}")
    op.create_index("ix_grants_lasts", "grants", ["lasts_seconds", "granted_at"])


def downgrade() -> None:
    op.drop_index("ix_grants_lasts", table_name="grants")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("lasts_seconds")
