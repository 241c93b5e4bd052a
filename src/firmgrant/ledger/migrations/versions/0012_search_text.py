"""Search that knows Unicode: each grant's org name and grantor, case and accents aside.

SQLite's ``lower()`` folds ASCII only, so ``Ørsted`` found nothing there; the ledger now keeps
``grants.search_text`` (``grant.search_text``: NFKD, accents dropped, casefolded) and the
dashboard matches the same folding of what is typed. Existing grants are filled here.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

from firmgrant.grant import search_key

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    op.add_column("grants", sa.Column("search_text", sa.Text()))
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT id, org_name, grantor_username FROM grants WHERE id > :last "
                "ORDER BY id LIMIT :batch"
            ),
            {"last": last, "batch": BATCH},
        ).all()
        if not rows:
            return
        bind.execute(
            sa.text("UPDATE grants SET search_text = :text WHERE id = :id"),
            [{"id": row[0], "text": search_key(row[1], row[2])} for row in rows],
        )
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_column("grants", "search_text")
