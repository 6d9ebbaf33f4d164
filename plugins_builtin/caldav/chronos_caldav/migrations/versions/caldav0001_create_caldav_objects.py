"""create caldav objects and calendars

Revision ID: caldav0001
Revises:
Create Date: 2026-12-07 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "caldav0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "caldav_calendars",
        sa.Column("calendar_id", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("calendar_id", name=op.f("pk_caldav_calendars")),
    )
    op.create_table(
        "caldav_objects",
        sa.Column("calendar_id", sa.String(length=200), nullable=False),
        sa.Column("href", sa.String(length=1024), nullable=False),
        sa.Column("uid", sa.String(length=1024), nullable=False),
        sa.Column("etag", sa.String(length=300), nullable=True),
        sa.Column("keys", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("recurring", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("calendar_id", "href", name=op.f("pk_caldav_objects")),
    )
    op.create_index("ix_caldav_objects_uid", "caldav_objects", ["calendar_id", "uid"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_caldav_objects_uid", table_name="caldav_objects")
    op.drop_table("caldav_objects")
    op.drop_table("caldav_calendars")
