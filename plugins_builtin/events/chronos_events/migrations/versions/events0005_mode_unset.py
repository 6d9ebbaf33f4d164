"""an event's mode may be unset (its calendar's default)

Until now every event without a mode was stored as ``free``, so an event could
not say "free" on a calendar whose default is auto-plan. ``mode`` becomes
nullable and the stored ``free`` values become NULL: they were indistinguishable
from "not set", and the planning plugin treated them as the calendar's default
already, so nothing behaves differently. Content hashes stay valid (an unset mode
hashes as ``free`` did). SQLite rebuilds the table as events0003 does (keeping
AUTOINCREMENT and the full-text triggers).

Revision ID: events0005
Revises: events0004
Create Date: 2026-12-07 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "events0005"
down_revision = "events0004"
branch_labels = None
depends_on = None

# Literal copies of events0001's triggers: dropping the old table drops them.
SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS events_fts_ai AFTER INSERT ON events BEGIN\n  INSERT INTO events_fts(rowid, title, description, location)\n  VALUES (new.id, new.title, new.description, new.location);\nEND",
    "CREATE TRIGGER IF NOT EXISTS events_fts_ad AFTER DELETE ON events BEGIN\n  INSERT INTO events_fts(events_fts, rowid, title, description, location)\n  VALUES ('delete', old.id, old.title, old.description, old.location);\nEND",
    "CREATE TRIGGER IF NOT EXISTS events_fts_au AFTER UPDATE OF title, description, location ON events BEGIN\n  INSERT INTO events_fts(events_fts, rowid, title, description, location)\n  VALUES ('delete', old.id, old.title, old.description, old.location);\n  INSERT INTO events_fts(rowid, title, description, location)\n  VALUES (new.id, new.title, new.description, new.location);\nEND",
)


def _nullable(nullable: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    kwargs = {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}} if sqlite else {}
    with op.batch_alter_table("events", **kwargs) as batch_op:
        batch_op.alter_column("mode", existing_type=sa.String(length=16), nullable=nullable)
    if sqlite:
        for ddl in SQLITE_TRIGGERS:
            op.execute(ddl)


def upgrade() -> None:
    _nullable(True)
    op.execute("UPDATE events SET mode = NULL WHERE mode = 'free'")


def downgrade() -> None:
    op.execute("UPDATE events SET mode = 'free' WHERE mode IS NULL")
    _nullable(False)
