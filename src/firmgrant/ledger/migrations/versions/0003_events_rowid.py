"""SQLite: the event id becomes the table's rowid.

A ``BIGINT PRIMARY KEY`` is not SQLite's rowid: the table kept a hidden rowid and a second
B-tree for the id, so every append wrote one index more and every read by id range (verify,
export) went through that index and then the table. ``INTEGER PRIMARY KEY`` is the rowid
itself. PostgreSQL keeps its ``BIGINT``. SQLite rebuilds the table: the rows, their ids and
their hashes are copied as they are.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _events_id(to: sa.types.TypeEngine[int], was: sa.types.TypeEngine[int]) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("events", recreate="always") as batch:
        batch.alter_column("id", type_=to, existing_type=was, existing_nullable=False)


def upgrade() -> None:
    _events_id(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    _events_id(sa.BigInteger(), sa.Integer())
