"""whitelist entries may restrict the sources and calendars of their commands

``sources`` and ``calendars`` are JSON lists of the calendar sources
(``ics``, ``local`` …) and calendar ids whose ``ACTION:`` entries may create
the entry's commands; null allows any.

Revision ID: commands0003
Revises: commands0002
Create Date: 2026-12-07 04:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "commands0003"
down_revision = "commands0002"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("whitelists") as batch:
        batch.add_column(sa.Column("sources", _JSON, nullable=True))
        batch.add_column(sa.Column("calendars", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("whitelists") as batch:
        batch.drop_column("calendars")
        batch.drop_column("sources")
