"""a release gate (/filter) against several real sets: one batch per set, grouped

Each batch of a multi-set /filter names the gate's first batch (``gate_batch_id``) and how
many batches the gate has (``gate_size``), so GET /filter/{id} reads the gate whole and
refuses it once one of its batches is deleted. Existing batches: NULL (a one-set gate).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN of nullable columns (no SQLite table rebuild; see 0004).
    op.add_column("match_batches", sa.Column("gate_batch_id", sa.Integer(), nullable=True))
    op.add_column("match_batches", sa.Column("gate_size", sa.Integer(), nullable=True))
    op.create_index("ix_match_batches_gate_batch_id", "match_batches", ["gate_batch_id"])


def downgrade() -> None:
    # Plain DROP COLUMN: a SQLite batch rebuild would cascade-delete the batches' children.
    op.drop_index("ix_match_batches_gate_batch_id", table_name="match_batches")
    op.drop_column("match_batches", "gate_size")
    op.drop_column("match_batches", "gate_batch_id")
