"""The delivery log (``mail_deliveries``, a public table) and stored attachments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chronos.plugin import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class MailDelivery(Base):
    """One message to send, and what happened to it.

    ``status``: queued -> sent, or -> retrying (a temporary failure; due again
    at ``next_attempt_at``) -> ... -> sent or failed. ``locked_by`` and
    ``locked_until`` are the sender's claim: a runner owns the row until the
    lease ends, so two runners never send one delivery at the same time.
    """

    __tablename__ = "mail_deliveries"
    __table_args__ = (
        Index("ix_mail_deliveries_due", "status", "next_attempt_at"),
        Index("ix_mail_deliveries_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    from_addr: Mapped[str] = mapped_column(String(400))
    to_addrs: Mapped[list[str]] = mapped_column(JSONType)
    cc_addrs: Mapped[list[str]] = mapped_column(JSONType, default=list)
    bcc_addrs: Mapped[list[str]] = mapped_column(JSONType, default=list)
    subject: Mapped[str] = mapped_column(Text())
    html: Mapped[str | None] = mapped_column(Text(), nullable=True)
    text: Mapped[str] = mapped_column(Text())
    template_id: Mapped[int | None] = mapped_column(BigInteger(), nullable=True)
    template_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    last_smtp_code: Mapped[int | None] = mapped_column(Integer(), nullable=True)
    last_smtp_text: Mapped[str | None] = mapped_column(Text(), nullable=True)
    refused_recipients: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(300), nullable=True, unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    attachments: Mapped[list[MailAttachmentRow]] = relationship(
        order_by="MailAttachmentRow.position", cascade="all, delete-orphan", lazy="raise"
    )


class MailAttachmentRow(Base):
    __tablename__ = "mail_attachments"
    __table_args__ = (Index("ix_mail_attachments_delivery", "delivery_id", "position"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("mail_deliveries.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer())
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer())
    content: Mapped[bytes] = mapped_column(LargeBinary())
