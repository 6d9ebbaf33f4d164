"""job runs name their runner

``job_runs.runner_id`` is the job runner process executing a run. A run whose
runner stopped beating (killed, crashed) is marked interrupted instead of
showing "running" forever, and another process does not start the same job
while a live runner is executing it.

Revision ID: k0004
Revises: k0003
Create Date: 2026-12-07 10:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "k0004"
down_revision = "k0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_runs", sa.Column("runner_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("runner_id")
