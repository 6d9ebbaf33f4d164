"""never reuse template ids on SQLite

SQLite reuses the highest rowid after its row is deleted, so a deleted
template's id could be handed to a new template. The table is rebuilt with
AUTOINCREMENT (ids only grow, tracked in sqlite_sequence). PostgreSQL:
nothing to do (a sequence never hands out a number twice).

Revision ID: templates0002
Revises: templates0001
Create Date: 2026-12-07 04:00:00
"""

from __future__ import annotations

from alembic import op

revision = "templates0002"
down_revision = "templates0001"
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # Foreign keys are off while migrating, so dropping the old table cascades nothing;
    # the migration checks them again before it commits.
    with op.batch_alter_table("templates", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
