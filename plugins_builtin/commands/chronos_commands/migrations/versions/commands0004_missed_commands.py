"""whitelist entries get a grace for late commands; late commands become ``missed``

``whitelists.grace_seconds`` (null: no limit) bounds how late after its
``not_before`` a command may still be handed out; a later one gets the new
status ``missed`` instead. The status CHECK constraint of
``external_commands`` gains the value (SQLite rebuilds the table, keeping
AUTOINCREMENT).

Revision ID: commands0004
Revises: commands0003
Create Date: 2026-12-07 07:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "commands0004"
down_revision = "commands0003"
branch_labels = None
depends_on = None

_STATUSES = ("pending", "processing", "completed", "failed", "dead", "cancelled")


def _status_check(statuses: tuple[str, ...]) -> None:
    kwargs: dict = {}
    if op.get_bind().dialect.name == "sqlite":
        # Foreign keys are off while migrating; the migration checks them again before it commits.
        kwargs = {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}}
    with op.batch_alter_table("external_commands", **kwargs) as batch:
        batch.drop_constraint(op.f("ck_external_commands_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_external_commands_status"), "status IN (" + ",".join(f"'{s}'" for s in statuses) + ")"
        )


def upgrade() -> None:
    with op.batch_alter_table("whitelists") as batch:
        batch.add_column(sa.Column("grace_seconds", sa.Integer(), nullable=True))
    _status_check((*_STATUSES, "missed"))


def downgrade() -> None:
    # A missed command was not run; going back it is failed (with its reason kept as the error).
    op.execute("UPDATE external_commands SET status = 'failed' WHERE status = 'missed'")
    _status_check(_STATUSES)
    with op.batch_alter_table("whitelists") as batch:
        batch.drop_column("grace_seconds")
