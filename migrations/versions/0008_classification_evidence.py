"""each classification result's evidence: the generated images behind its verdict

The reference auditor names, per real image, the generated images (strongest first) that
support its verdict, with their figures. Existing rows: NULL (read back as an empty list).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN of a nullable column (no SQLite table rebuild; see 0004).
    op.add_column("classification_results", sa.Column("evidence", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN: a SQLite batch rebuild would cascade-delete the rows' children.
    op.drop_column("classification_results", "evidence")
