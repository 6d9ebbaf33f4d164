"""the calendar window index covers free/busy lookups

``ix_events_calendar_start`` gains the columns a free/busy lookup filters and
returns (transparency, status, all_day, mode): "which of these calendars' events
block this fortnight" is answered from the index alone, without reading a row
per event. Its order, and so the listings it serves, is unchanged.

Revision ID: events0006
Revises: events0005
Create Date: 2026-12-07 19:00:00
"""

from __future__ import annotations

from alembic import op

revision = "events0006"
down_revision = "events0005"
branch_labels = None
depends_on = None

NAME = "ix_events_calendar_start"
KEY = ["calendar_id", "start_utc", "id", "end_utc"]


def _index(columns: list[str]) -> None:
    op.drop_index(NAME, table_name="events")
    op.create_index(NAME, "events", columns)


def upgrade() -> None:
    _index([*KEY, "transparency", "status", "all_day", "mode"])


def downgrade() -> None:
    _index(KEY)
