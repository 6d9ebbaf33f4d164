"""progress of the conflicts backfill

Revision ID: planning0004
Revises: planning0003
Create Date: 2026-12-07 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "planning0004"
down_revision = "planning0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "planning_backfill",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("after_id", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_planning_backfill")),
    )


def downgrade() -> None:
    op.drop_table("planning_backfill")
