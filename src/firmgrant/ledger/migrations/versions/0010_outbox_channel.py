"""The outbox carries support notices too: each row says its channel (email or webhook).

A notice to the support team goes by email, by webhook, or both: one row per channel, so
the unique key becomes (grant, kind, due time, channel). Existing rows are emails.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(
            sa.Column("channel", sa.String(16), nullable=False, server_default="email")
        )
        batch.drop_constraint("uq_outbox_grant_kind_due", type_="unique")
        batch.create_unique_constraint(
            "uq_outbox_grant_kind_due_channel", ["grant_id", "kind", "due_at", "channel"]
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("uq_outbox_grant_kind_due_channel", type_="unique")
        batch.create_unique_constraint("uq_outbox_grant_kind_due", ["grant_id", "kind", "due_at"])
        batch.drop_column("channel")
