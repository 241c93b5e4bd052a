"""The connection registry: one row per customer org the worker polls.

Each org carries what its connection needs beyond the vendor's shared connected app, its
state (how its last sync went) and the lease a worker holds on it while syncing, so that
replicas share the orgs with no overlap.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(18), unique=True),
        sa.Column("org_name", sa.String(255)),
        sa.Column("login_url", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("date_order", sa.String(3), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("admin_emails", sa.Text, nullable=False),
        sa.Column("secret", sa.Text),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("last_sync_at", TS),
        sa.Column("next_sync_at", TS, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", TS),
        sa.Column("api_used", sa.Integer),
        sa.Column("api_limit", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_orgs_due", "orgs", ["enabled", "next_sync_at"])


def downgrade() -> None:
    op.drop_index("ix_orgs_due", "orgs")
    op.drop_table("orgs")
