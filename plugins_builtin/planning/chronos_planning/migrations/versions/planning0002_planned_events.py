"""planned events by time

Revision ID: planning0002
Revises: planning0001
Create Date: 2026-12-07 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "planning0002"
down_revision = "planning0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "planning_planned",
        sa.Column("event_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("start_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_utc", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_planning_planned_event_id_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_planning_planned")),
    )
    op.create_index("ix_planning_planned_start", "planning_planned", ["start_utc", "event_id", "end_utc"], unique=False)
    # Events stored before: auto-plan ones join the table.
    op.execute(
        "INSERT INTO planning_planned (event_id, start_utc, end_utc)"
        " SELECT id, start_utc, end_utc FROM events WHERE mode = 'auto-plan'"
    )


def downgrade() -> None:
    op.drop_index("ix_planning_planned_start", table_name="planning_planned")
    op.drop_table("planning_planned")
