"""signed inbound requests: one answer per client and webhook id

Revision ID: webhooks0002
Revises: webhooks0001
Create Date: 2026-12-07 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "webhooks0002"
down_revision = "webhooks0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhooks_inbound",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("client", sa.String(length=63), nullable=False),
        sa.Column("webhook_id", sa.String(length=200), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("media_type", sa.String(length=200), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks_inbound")),
        sa.UniqueConstraint("client", "webhook_id", name=op.f("uq_webhooks_inbound_client_webhook_id")),
    )
    op.create_index("ix_webhooks_inbound_received", "webhooks_inbound", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhooks_inbound_received", table_name="webhooks_inbound")
    op.drop_table("webhooks_inbound")
