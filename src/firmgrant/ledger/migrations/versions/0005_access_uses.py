"""Uses of Login-As access by the vendor's support, read from customers' audit trails.

One row per audit row (``suloginaccessused``), so a re-read records nothing twice; the grant
it fell under, if one was valid at that moment (else the use is a violation).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_uses",
        sa.Column("connection", sa.String(40), primary_key=True),
        sa.Column("row_id", sa.String(18), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("support_user", sa.String(255), nullable=False),
        sa.Column("customer_user_id", sa.String(18), nullable=False),
        sa.Column("grant_id", sa.Integer, sa.ForeignKey("grants.id")),
        sa.Column("valid", sa.Boolean, nullable=False),
    )
    op.create_index("ix_access_uses_grant_id", "access_uses", ["grant_id"])


def downgrade() -> None:
    op.drop_index("ix_access_uses_grant_id", "access_uses")
    op.drop_table("access_uses")
