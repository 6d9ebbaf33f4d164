"""The outbox, the webhook endpoints, their deliveries and every attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from chronos.plugin import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class OutboxRow(Base):
    """A published message. ``fanned_out`` turns true when the dispatcher has
    created one delivery per subscriber (in one transaction with that change)."""

    __tablename__ = "webhooks_outbox"
    __table_args__ = (Index("ix_webhooks_outbox_pending", "fanned_out", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(40), unique=True)
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    calendar_id: Mapped[str | None] = mapped_column(String(300), nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(300), nullable=True, unique=True)
    endpoint_id: Mapped[int | None] = mapped_column(BigInteger(), nullable=True)  # a test message for one endpoint
    fanned_out: Mapped[bool] = mapped_column(Boolean(), default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class EndpointRow(Base):
    """A webhook endpoint. ``secrets`` is a list of ``{"secret", "created_at", "expires_at"}``."""

    __tablename__ = "webhooks_endpoints"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(Text())
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str]] = mapped_column(JSONType)
    calendars: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    template_id: Mapped[int | None] = mapped_column(BigInteger(), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean(), default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(300), nullable=True)
    secrets: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DeliveryRow(Base):
    """One message to one subscriber (an endpoint, or a plugin's delivery target).

    ``status``: pending -> delivered, or -> dead (retries exhausted, a
    permanent refusal, 410 Gone). A dead letter returns to pending when it is
    replayed. ``locked_by``/``locked_until`` are a dispatcher's lease.
    """

    __tablename__ = "webhooks_deliveries"
    __table_args__ = (
        Index("ix_webhooks_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhooks_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhooks_deliveries_message", "message_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("webhooks_outbox.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("webhooks_endpoints.id", ondelete="CASCADE"), nullable=True
    )
    target: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AttemptRow(Base):
    """One try of a delivery: when, how it went, how long it took, what the receiver said."""

    __tablename__ = "webhooks_attempts"
    __table_args__ = (
        Index("ix_webhooks_attempts_endpoint", "endpoint_id", "id"),
        Index("ix_webhooks_attempts_delivery", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhooks_deliveries.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int | None] = mapped_column(BigInteger(), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer())
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer(), nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float())
    error: Mapped[str | None] = mapped_column(Text(), nullable=True)
    response_excerpt: Mapped[str | None] = mapped_column(Text(), nullable=True)


class InboundReceipt(Base):
    """A signed inbound request's webhook id, per client, and its first answer (``status_code`` None: in progress)."""

    __tablename__ = "webhooks_inbound"
    __table_args__ = (
        UniqueConstraint("client", "webhook_id"),
        Index("ix_webhooks_inbound_received", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    client: Mapped[str] = mapped_column(String(63))
    webhook_id: Mapped[str] = mapped_column(String(200))
    status_code: Mapped[int | None] = mapped_column(Integer(), nullable=True)
    body: Mapped[bytes | None] = mapped_column(LargeBinary(), nullable=True)
    media_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
