"""planned events carry their calendar and all-day flag, and only those that block

Revision ID: planning0006
Revises: planning0005
Create Date: 2026-12-07 16:30:00

``planning_planned`` is derived from ``events`` (events whose own mode is auto-plan):
rebuilt here with the busy, non-cancelled ones only and the columns the conflict sink
needs, in its index, so pairing a batch's free events never reads the events table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "planning0006"
down_revision = "planning0005"
branch_labels = None
depends_on = None


def _rebuild(extra: bool) -> None:
    """Drop ``planning_planned`` and fill it again from the events: with the calendar and all-day
    columns and only blocking events (``extra``), or as planning0002 made it."""
    op.drop_index("ix_planning_planned_start", table_name="planning_planned")
    op.drop_table("planning_planned")
    columns = [
        sa.Column("event_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("start_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_utc", sa.DateTime(timezone=True), nullable=False),
    ]
    names = ["event_id", "start_utc", "end_utc"]
    sources = "id, start_utc, end_utc"
    where = "mode = 'auto-plan'"
    if extra:
        columns += [
            sa.Column("calendar_id", sa.String(length=200), nullable=False),
            sa.Column("all_day", sa.Boolean(), nullable=False),
        ]
        names += ["calendar_id", "all_day"]
        sources += ", calendar_id, all_day"
        where += " AND transparency = 'busy' AND status <> 'cancelled'"
    op.create_table(
        "planning_planned",
        *columns,
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_planning_planned_event_id_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_planning_planned")),
    )
    op.execute(f"INSERT INTO planning_planned ({', '.join(names)}) SELECT {sources} FROM events WHERE {where}")
    index = ["start_utc", "event_id", "end_utc", *(["calendar_id", "all_day"] if extra else [])]
    op.create_index("ix_planning_planned_start", "planning_planned", index, unique=False)


def upgrade() -> None:
    _rebuild(extra=True)


def downgrade() -> None:
    _rebuild(extra=False)
