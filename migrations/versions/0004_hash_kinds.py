"""the fingerprint kind of each real set and of each match batch

pHash was the only fingerprint and nothing recorded it. A set now stores the kind its images
are hashed with and a batch the kind it was matched with; existing rows are all pHash.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("real_sets", "match_batches")


def upgrade() -> None:
    # Plain ADD COLUMN on both backends (NOT NULL is allowed with a constant default): batch
    # mode would rebuild the SQLite tables, and dropping the old copy of real_sets or
    # match_batches cascades to every image, generated image and summary row.
    for table in TABLES:
        op.add_column(
            table,
            sa.Column("hash_kind", sa.String(length=20), server_default="phash", nullable=False),
        )


def downgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        other = bind.scalar(sa.text(f"SELECT count(*) FROM {table} WHERE hash_kind <> 'phash'"))
        if other:
            raise RuntimeError(
                f"{other} row(s) of {table} are hashed with a kind other than phash, which "
                "revision 0003 cannot tell apart; delete them before downgrading"
            )
    # A plain DROP COLUMN (SQLite >= 3.35), for the same reason as in upgrade().
    for table in reversed(TABLES):
        op.drop_column(table, "hash_kind")
