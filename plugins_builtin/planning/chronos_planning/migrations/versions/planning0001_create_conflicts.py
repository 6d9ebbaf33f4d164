"""create planning conflicts and spans

Revision ID: planning0001
Revises:
Create Date: 2026-12-07 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "planning0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "planning_conflicts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_a", sa.BigInteger(), nullable=False),
        sa.Column("event_b", sa.BigInteger(), nullable=False),
        sa.Column("calendar_a", sa.String(length=200), nullable=False),
        sa.Column("calendar_b", sa.String(length=200), nullable=False),
        sa.Column("overlap_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("overlap_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_a"], ["events.id"], name=op.f("fk_planning_conflicts_event_a_events"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_b"], ["events.id"], name=op.f("fk_planning_conflicts_event_b_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_planning_conflicts")),
        sa.UniqueConstraint("event_a", "event_b", name=op.f("uq_planning_conflicts_event_a_event_b")),
    )
    op.create_index("ix_planning_conflicts_b", "planning_conflicts", ["event_b"], unique=False)
    op.create_index(
        "ix_planning_conflicts_window", "planning_conflicts", ["overlap_start", "id", "overlap_end"], unique=False
    )
    op.create_table(
        "planning_spans",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("max_duration_seconds", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_planning_spans")),
    )


def downgrade() -> None:
    op.drop_table("planning_spans")
    op.drop_index("ix_planning_conflicts_window", table_name="planning_conflicts")
    op.drop_index("ix_planning_conflicts_b", table_name="planning_conflicts")
    op.drop_table("planning_conflicts")
