"""Revocations remember when their last attempt was sent.

The time an attempt sends as ``Revoked_At__c``, with the reason it sends, marks a record
revoked by firmgrant: a worker killed while its call was with Salesforce left no outcome,
and whoever reads the record next (a sync, enforce, the next attempt) recognises the
revocation as firmgrant's instead of the customer's.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("revocations") as batch:
        batch.add_column(sa.Column("attempted_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("revocations") as batch:
        batch.drop_column("attempted_at")
