"""narrow conflict pairs: keyed by the pair, times in whole seconds, reason as a code

Revision ID: planning0005
Revises: planning0004
Create Date: 2026-12-07 16:00:00

The pairs move from ``planning_conflicts`` to ``planning_pairs`` (every pair carried over;
published marks stay in ``planning_published``). On SQLite the new table has no rowid: the
pair is the key, so one B-tree holds both the rows and the pair lookup.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "planning0005"
down_revision = "planning0004"
branch_labels = None
depends_on = None


def _seconds(column: str, *, up: bool) -> str:
    """A stored timestamp as whole UTC seconds (floored, or ceiled when ``up``)."""
    if op.get_bind().dialect.name == "sqlite":  # 'YYYY-MM-DD HH:MM:SS.ffffff', naive UTC
        whole = f"CAST(strftime('%s', {column}) AS INTEGER)"
        return f"({whole} + (substr({column}, 21, 6) > '000000'))" if up else whole
    return f"CAST({'ceil' if up else 'floor'}(extract(epoch FROM {column})) AS bigint)"


def upgrade() -> None:
    op.create_table(
        "planning_pairs",
        sa.Column("event_b", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_a", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("overlap_start", sa.BigInteger(), nullable=False),
        sa.Column("overlap_end", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.SmallInteger(), nullable=False),
        sa.Column("detected_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_a"], ["events.id"], name=op.f("fk_planning_pairs_event_a_events"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_b"], ["events.id"], name=op.f("fk_planning_pairs_event_b_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("event_b", "event_a", name=op.f("pk_planning_pairs")),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO planning_pairs (event_b, event_a, overlap_start, overlap_end, reason, detected_at)"
        f" SELECT event_b, event_a, {_seconds('overlap_start', up=False)}, {_seconds('overlap_end', up=True)},"
        " CASE reason WHEN 'auto-plan' THEN 1 ELSE 2 END,"
        f" {_seconds('detected_at', up=False)} FROM planning_conflicts ORDER BY event_b, event_a"
    )
    # Indexes after the rows: one sorted build each instead of a random insert per row.
    op.create_index("ix_planning_pairs_a", "planning_pairs", ["event_a"], unique=False)
    op.create_index(
        "ix_planning_pairs_window",
        "planning_pairs",
        ["overlap_start", "event_a", "event_b", "overlap_end", "reason", "detected_at"],
        unique=False,
    )
    op.drop_index("ix_planning_conflicts_window", table_name="planning_conflicts")
    op.drop_index("ix_planning_conflicts_b", table_name="planning_conflicts")
    op.drop_table("planning_conflicts")


def _timestamp(column: str) -> str:
    if op.get_bind().dialect.name == "sqlite":
        return f"(datetime({column}, 'unixepoch') || '.000000')"
    return f"to_timestamp({column})"


def downgrade() -> None:
    op.create_table(
        "planning_conflicts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_a", sa.BigInteger(), nullable=False),
        sa.Column("event_b", sa.BigInteger(), nullable=False),
        sa.Column("calendar_a", sa.String(length=200), nullable=False),
        sa.Column("calendar_b", sa.String(length=200), nullable=False),
        sa.Column("overlap_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("overlap_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_a"], ["events.id"], name=op.f("fk_planning_conflicts_event_a_events"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_b"], ["events.id"], name=op.f("fk_planning_conflicts_event_b_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_planning_conflicts")),
        sa.UniqueConstraint("event_a", "event_b", name=op.f("uq_planning_conflicts_event_a_event_b")),
    )
    op.execute(
        "INSERT INTO planning_conflicts"
        " (event_a, event_b, calendar_a, calendar_b, overlap_start, overlap_end, reason, detected_at)"
        " SELECT p.event_a, p.event_b, a.calendar_id, b.calendar_id,"
        f" {_timestamp('p.overlap_start')}, {_timestamp('p.overlap_end')},"
        " CASE p.reason WHEN 1 THEN 'auto-plan' ELSE 'all-overlaps' END, "
        f" {_timestamp('p.detected_at')} FROM planning_pairs AS p JOIN events AS a ON a.id = p.event_a"
        " JOIN events AS b ON b.id = p.event_b ORDER BY p.overlap_start, p.event_a, p.event_b"
    )
    op.create_index("ix_planning_conflicts_b", "planning_conflicts", ["event_b"], unique=False)
    op.create_index(
        "ix_planning_conflicts_window", "planning_conflicts", ["overlap_start", "id", "overlap_end"], unique=False
    )
    op.drop_index("ix_planning_pairs_window", table_name="planning_pairs")
    op.drop_index("ix_planning_pairs_a", table_name="planning_pairs")
    op.drop_table("planning_pairs")
