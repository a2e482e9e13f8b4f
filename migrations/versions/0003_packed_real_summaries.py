"""per-real-image /match results of very large sets kept packed on the batch

A batch against a set of a million hashes wrote a million summary rows (~10 s and ~80 MB on
PostgreSQL per batch). Above a size, the same results are kept as one compressed blob.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 02:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("match_batches") as batch:
        batch.add_column(sa.Column("real_summary_packed", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    packed = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM match_batches WHERE real_summary_packed IS NOT NULL")
    )
    if packed:
        raise RuntimeError(
            f"{packed} match batch(es) keep their per-real-image results packed, which revision "
            "0002 cannot read; delete those batches before downgrading"
        )
    # A plain DROP COLUMN (SQLite >= 3.35): batch mode would rebuild the table, and dropping
    # the old copy cascades to every batch's generated images and summary rows.
    op.drop_column("match_batches", "real_summary_packed")
