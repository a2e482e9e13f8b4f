"""per-image thumbnails stored at upload; real images registered by hash alone

Thumbnails (32x32 grayscale, 1 KB) are computed while an image is hashed, so /classify
never has to decode a whole batch again to find its candidates. Real images imported as
precomputed hashes have no bytes: no sha256, no size.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 22:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("real_images") as batch:
        batch.add_column(sa.Column("thumbnail", sa.LargeBinary(), nullable=True))
        batch.alter_column("sha256", existing_type=sa.String(length=64), nullable=True)
        batch.alter_column("width", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("height", existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table("generated_images") as batch:
        batch.add_column(sa.Column("thumbnail", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generated_images") as batch:
        batch.drop_column("thumbnail")
    with op.batch_alter_table("real_images") as batch:
        batch.alter_column("height", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("width", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("sha256", existing_type=sa.String(length=64), nullable=False)
        batch.drop_column("thumbnail")
