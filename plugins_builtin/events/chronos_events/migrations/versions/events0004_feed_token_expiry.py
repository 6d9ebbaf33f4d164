"""feed tokens: expiry and last use

Tokens created from now on expire (``events.feed_token_days``); tokens that
exist already keep ``expires_at`` NULL and work until the API key that
created them is revoked or expires. ``last_used_at`` is touched at most once
a minute per token.

Revision ID: events0004
Revises: events0003
Create Date: 2026-12-07 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "events0004"
down_revision = "events0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events_feed_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events_feed_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
