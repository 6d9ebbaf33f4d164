"""The ``templates`` table (a public table named by the product) and its usage log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chronos.plugin import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class Template(Base):
    """One template. ``content`` holds the type's parts (see ``schemas.py``)."""

    __tablename__ = "templates"
    __table_args__ = (
        Index("ix_templates_usage", "usage_count", "id"),
        Index("ix_templates_type", "type"),
        # SQLite: a deleted template's id is never handed out again (revision templates0002).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text(), default="")
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    variables_json: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    content: Mapped[dict[str, Any]] = mapped_column(JSONType)
    usage_count: Mapped[int] = mapped_column(Integer(), default=0)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TemplateUsage(Base):
    """One ``POST /templates/{id}/use``: who (key), when, with what context, and the result.

    ``idempotency_key`` is the caller's key id and its Idempotency-Key header,
    so a retried request returns this row instead of creating a second event.
    """

    __tablename__ = "templates_usages"
    __table_args__ = (Index("ix_templates_usages_template", "template_id", "used_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    context: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(300), nullable=True, unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
