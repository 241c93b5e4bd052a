"""The audit history as Salesforce wrote it: when each event happened, each trail row kept.

- ``events.occurred_at``: when the event happened (an audit row's ``CreatedDate``, a record's
  change time, the moment firmgrant acted), beside ``at``, when it was recorded. Existing
  events happened when they were recorded: filled with ``at``. The chain's canonical row
  names ``occurred_at`` only where it differs from ``at``, so every existing hash still holds.
- ``trail_rows``: each Setup Audit Trail row applied to the grants, with its words, the
  expiry read from them and the grant it went to: a re-read applies nothing twice, a row
  read late is folded in its place, and the ledger keeps the trail beyond Salesforce's
  180 days.
- ``org_profiles``: what each org told of its locale and time zone (how a trail row's date
  is read), and of the user firmgrant reads it as, learned from Salesforce.
- ``revocations.outcome`` / ``note``: what a finished revocation did (an audit grant's
  support sessions ended, or not, is not a revocation in Salesforce).
- ``sync_state.unreadable``: the first trail row the sync could not read, while any is.
- ``orgs.date_order`` / ``time_zone`` become overrides: NULL means learned. The old defaults
  (``MDY``, ``UTC``) were never a choice anyone could tell apart from a guess: they become NULL.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable at the database: SQLite adds the column without rebuilding a large table.
    # firmgrant always writes it; the fill below leaves no NULL behind.
    op.add_column("events", sa.Column("occurred_at", sa.DateTime(timezone=True)))
    op.execute("UPDATE events SET occurred_at = at")
    op.create_table(
        "trail_rows",
        sa.Column("connection", sa.String(40), primary_key=True),
        sa.Column("row_id", sa.String(18), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(18), nullable=False),
        sa.Column("username", sa.String(255)),
        sa.Column("email", sa.String(255)),
        sa.Column("delegate", sa.String(255)),
        sa.Column("publisher", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("read_as", sa.String(3)),
        sa.Column("note", sa.Text),
        sa.Column("display", sa.Text, nullable=False),
        sa.Column("grant_id", sa.Integer, sa.ForeignKey("grants.id")),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_trail_rows_user", "trail_rows", ["connection", "user_id", "at"])
    op.create_table(
        "org_profiles",
        sa.Column("connection", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(18)),
        sa.Column("org_name", sa.String(255)),
        sa.Column("time_zone", sa.String(64)),
        sa.Column("locale", sa.String(16)),
        sa.Column("language", sa.String(16)),
        sa.Column("reader_id", sa.String(18)),
        sa.Column("reader_time_zone", sa.String(64)),
        sa.Column("reader_locale", sa.String(16)),
        sa.Column("reader_language", sa.String(16)),
        sa.Column("learned_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("revocations") as batch:
        batch.add_column(sa.Column("outcome", sa.String(24)))
        batch.add_column(sa.Column("note", sa.Text))
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("unreadable", sa.Text))
    with op.batch_alter_table("orgs") as batch:
        batch.alter_column("date_order", existing_type=sa.String(3), nullable=True)
        batch.alter_column("time_zone", existing_type=sa.String(64), nullable=True)
    op.execute("UPDATE orgs SET date_order = NULL WHERE date_order = 'MDY'")
    op.execute("UPDATE orgs SET time_zone = NULL WHERE time_zone = 'UTC'")


def downgrade() -> None:
    op.execute("UPDATE orgs SET date_order = 'MDY' WHERE date_order IS NULL")
    op.execute("UPDATE orgs SET time_zone = 'UTC' WHERE time_zone IS NULL")
    with op.batch_alter_table("orgs") as batch:
        batch.alter_column("date_order", existing_type=sa.String(3), nullable=False)
        batch.alter_column("time_zone", existing_type=sa.String(64), nullable=False)
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("unreadable")
    with op.batch_alter_table("revocations") as batch:
        batch.drop_column("note")
        batch.drop_column("outcome")
    op.drop_table("org_profiles")
    op.drop_index("ix_trail_rows_user", "trail_rows")
    op.drop_table("trail_rows")
    op.drop_column("events", "occurred_at")
