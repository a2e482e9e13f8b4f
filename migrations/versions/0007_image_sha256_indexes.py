"""index the image rows by their bytes' SHA-256 (reference counting of the image store)

A stored file may be removed once no real or generated image row names its SHA-256
(app.services.retention). That question is asked per digest after every DELETE, failed
request and sweep; without these indexes each lookup scans the whole table (the existing
unique index on real_images leads with real_set_id). Existing rows are indexed as they are.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_real_images_sha256", "real_images", ["sha256"])
    op.create_index("ix_generated_images_sha256", "generated_images", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_generated_images_sha256", table_name="generated_images")
    op.drop_index("ix_real_images_sha256", table_name="real_images")
