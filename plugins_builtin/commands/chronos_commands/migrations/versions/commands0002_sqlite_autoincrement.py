"""never reuse command ids on SQLite

SQLite reuses the highest rowid after its row is deleted, so a deleted
command's id could be handed to a new command. The table is rebuilt with
AUTOINCREMENT (ids only grow, tracked in sqlite_sequence). PostgreSQL:
nothing to do (a sequence never hands out a number twice).

Revision ID: commands0002
Revises: commands0001
Create Date: 2026-12-07 04:00:00
"""

from __future__ import annotations

from alembic import op

revision = "commands0002"
down_revision = "commands0001"
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # Foreign keys are off while migrating, so dropping the old table cascades nothing;
    # the migration checks them again before it commits.
    with op.batch_alter_table(
        "external_commands", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
