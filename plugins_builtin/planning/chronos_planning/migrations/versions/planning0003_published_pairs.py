"""pairs announced once

Revision ID: planning0003
Revises: planning0002
Create Date: 2026-12-07 07:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "planning0003"
down_revision = "planning0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "planning_published",
        sa.Column("event_a", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_b", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_a"], ["events.id"], name=op.f("fk_planning_published_event_a_events"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_b"], ["events.id"], name=op.f("fk_planning_published_event_b_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("event_a", "event_b", name=op.f("pk_planning_published")),
    )


def downgrade() -> None:
    op.drop_table("planning_published")
