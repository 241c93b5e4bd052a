"""PostgreSQL: a grant's events indexed in id order, ``(grant_id, id)``.

The export replays each grant from its newest snapshot before a range: a walk back from an
id within one grant. On ``grant_id`` alone PostgreSQL has no order to walk and, without
fresh statistics (a bulk-loaded ledger, autovacuum off), it read the whole table once per
range. SQLite's index on ``grant_id`` already holds the rowid (the event id) in order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _index(*columns: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_events_grant_id", "events")
    op.create_index("ix_events_grant_id", "events", list(columns))


def upgrade() -> None:
    _index("grant_id", "id")


def downgrade() -> None:
    _index("grant_id")
