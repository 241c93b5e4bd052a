"""Grants, the hash-chained event log, its head, sync state and invalid records.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("connection", sa.String(40), nullable=False),
        sa.Column("source_id", sa.String(18), nullable=False),
        sa.Column("org_id", sa.String(18), nullable=False),
        sa.Column("org_name", sa.String(255)),
        sa.Column("grantor_id", sa.String(18)),
        sa.Column("grantor_username", sa.String(255)),
        sa.Column("grantor_email", sa.String(255)),
        sa.Column("grantee", sa.String(255), nullable=False),
        sa.Column("duration", sa.String(16)),
        sa.Column("granted_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("via_login_as", sa.Boolean(), nullable=False),
        sa.Column("login_as_user", sa.String(255)),
        sa.Column("sf_status", sa.String(16), nullable=False),
        sa.Column("revoked_at", TS),
        sa.Column("revoke_reason", sa.String(1000)),
        sa.Column("modstamp", TS, nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("seen_run", sa.BigInteger()),
        sa.UniqueConstraint("connection", "source_id", name="uq_grants_connection_source_id"),
    )
    op.create_index("ix_grants_expires_at", "grants", ["expires_at"])
    op.create_index("ix_grants_org_id", "grants", ["org_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("grant_id", sa.Integer(), sa.ForeignKey("grants.id")),
        sa.Column("connection", sa.String(40)),
        sa.Column("source_id", sa.String(48)),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_events_grant_id", "events", ["grant_id"])
    op.create_index("ix_events_at", "events", ["at"])
    chain_head = op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(chain_head, [{"id": 1, "last_event_id": 0, "hash": "0" * 64}])
    op.create_table(
        "sync_state",
        sa.Column("connection", sa.String(40), primary_key=True),
        sa.Column("source", sa.String(16), primary_key=True),
        sa.Column("watermark", TS),
        sa.Column("last_success_at", TS),
        sa.Column("last_full_sync_at", TS),
        sa.Column("last_error_at", TS),
        sa.Column("last_error", sa.Text()),
        sa.Column("api_used", sa.Integer()),
        sa.Column("api_limit", sa.Integer()),
        sa.Column("api_seen_at", TS),
    )
    op.create_table(
        "invalid_records",
        sa.Column("connection", sa.String(40), primary_key=True),
        sa.Column("record_key", sa.String(48), primary_key=True),
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("invalid_records", "sync_state", "chain_head", "events", "grants"):
        op.drop_table(table)
