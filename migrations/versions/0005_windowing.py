"""the window DICOM and 16-bit images are brought to 8 bits with, on sets and batches

The window decides the 8-bit pixels a CT slice is fingerprinted as, so a set stores it and
every later upload to the set uses it; a batch records its set's window and the windows its
images got. Existing rows: NULL (automatic windowing; they hold no windowed images).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WINDOW_COLUMNS = ("window_center", "window_width")


def upgrade() -> None:
    # Plain ADD COLUMN of nullable columns on both backends (no SQLite table rebuild, which
    # would cascade-delete every image of the rebuilt real_sets; see 0004).
    for table in ("real_sets", "match_batches"):
        for column in WINDOW_COLUMNS:
            op.add_column(table, sa.Column(column, sa.Float(), nullable=True))
    op.add_column("match_batches", sa.Column("windows_used", sa.JSON(), nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    windowed = bind.scalar(
        sa.text("SELECT count(*) FROM real_sets WHERE window_center IS NOT NULL")
    )
    if windowed:
        raise RuntimeError(
            f"{windowed} real set(s) have a window, which revision 0004 cannot store (their "
            "later uploads would be windowed differently); delete them before downgrading"
        )
    op.drop_column("match_batches", "windows_used")
    for table in ("match_batches", "real_sets"):
        for column in reversed(WINDOW_COLUMNS):
            op.drop_column(table, column)
