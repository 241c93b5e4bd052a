"""Revocations and the notification outbox (the worker's lifecycle).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _work_columns() -> list[sa.Column[object]]:
    """What a leased, retried piece of work carries (revocations and outbox rows alike)."""
    return [
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("done_at", TS),
    ]


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column("grant_id", sa.Integer(), sa.ForeignKey("grants.id"), primary_key=True),
        sa.Column("cause", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        *_work_columns(),
    )
    op.create_index("ix_revocations_due", "revocations", ["state", "next_attempt_at"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("grant_id", sa.Integer(), sa.ForeignKey("grants.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("offset_seconds", sa.Integer()),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        *_work_columns(),
        sa.UniqueConstraint("grant_id", "kind", "due_at", name="uq_outbox_grant_kind_due"),
    )
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_due", "outbox")
    op.drop_table("outbox")
    op.drop_index("ix_revocations_due", "revocations")
    op.drop_table("revocations")
