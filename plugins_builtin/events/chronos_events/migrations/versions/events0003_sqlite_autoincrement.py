"""never reuse event ids on SQLite

SQLite reuses the highest rowid after its row is deleted, so a deleted
event's id could be handed to a new event. The table is rebuilt with
AUTOINCREMENT (ids only grow, tracked in sqlite_sequence). The full-text triggers
are re-created (the rowids, and so the search index, are unchanged). PostgreSQL:
nothing to do (a sequence never hands out a number twice).

Revision ID: events0003
Revises: events0002
Create Date: 2026-12-07 04:00:00
"""

from __future__ import annotations

from alembic import op

revision = "events0003"
down_revision = "events0002"
branch_labels = None
depends_on = None

# Literal copies of events0001's triggers: dropping the old table dropped them.
SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS events_fts_ai AFTER INSERT ON events BEGIN\n  INSERT INTO events_fts(rowid, title, description, location)\n  VALUES (new.id, new.title, new.description, new.location);\nEND",
    "CREATE TRIGGER IF NOT EXISTS events_fts_ad AFTER DELETE ON events BEGIN\n  INSERT INTO events_fts(events_fts, rowid, title, description, location)\n  VALUES ('delete', old.id, old.title, old.description, old.location);\nEND",
    "CREATE TRIGGER IF NOT EXISTS events_fts_au AFTER UPDATE OF title, description, location ON events BEGIN\n  INSERT INTO events_fts(events_fts, rowid, title, description, location)\n  VALUES ('delete', old.id, old.title, old.description, old.location);\n  INSERT INTO events_fts(rowid, title, description, location)\n  VALUES (new.id, new.title, new.description, new.location);\nEND",
)


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # Foreign keys are off while migrating, so dropping the old table cascades nothing;
    # the migration checks them again before it commits.
    with op.batch_alter_table("events", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass
    for ddl in SQLITE_TRIGGERS:
        op.execute(ddl)


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
