"""copy-detection embeddings of images, and each generated image's `copy_of`

Each image's descriptor is computed at upload (float16 bytes); a batch's generated images
record the real image they copy by it, and the batch the rule that decided. Existing rows:
NULL (no embedding: /match gives `copy_of` null and says why).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN of nullable columns (no SQLite table rebuild; see 0004).
    op.add_column("real_images", sa.Column("embedding", sa.LargeBinary(), nullable=True))
    op.add_column("generated_images", sa.Column("embedding", sa.LargeBinary(), nullable=True))
    op.add_column("generated_images", sa.Column("copy_of", sa.JSON(), nullable=True))
    op.add_column("match_batches", sa.Column("copy_threshold", sa.Float(), nullable=True))
    op.add_column("match_batches", sa.Column("copy_rule", sa.Text(), nullable=True))


def downgrade() -> None:
    # Embeddings are derived data (recomputed on upload); dropping them loses no input. Plain
    # DROP COLUMN: a SQLite batch rebuild would cascade-delete every row of the children.
    for table, column in (
        ("match_batches", "copy_rule"),
        ("match_batches", "copy_threshold"),
        ("generated_images", "copy_of"),
        ("generated_images", "embedding"),
        ("real_images", "embedding"),
    ):
        op.drop_column(table, column)
