"""The sync pipeline's tables: one row per run, one state row per source+calendar."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chronos.db.base import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class SyncRun(Base):
    """One sync of one calendar: why it ran, what it changed, how it ended.

    ``status`` is ``running`` while in progress, then ``ok`` (everything
    applied; ``not_modified`` when the source reported no change), ``partial``
    (some items failed; they are in ``errors`` and come again next time) or
    ``error`` (the source or the kernel failed; the last good data is kept).
    """

    __tablename__ = "sync_runs"
    __table_args__ = (
        Index("ix_sync_runs_source_calendar", "source", "calendar_id", "id"),
        Index("ix_sync_runs_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    calendar_id: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(16))
    full: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16))
    not_modified: Mapped[bool] = mapped_column(default=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer(), nullable=True)
    batches: Mapped[int] = mapped_column(Integer(), default=0)
    added: Mapped[int] = mapped_column(Integer(), default=0)
    updated: Mapped[int] = mapped_column(Integer(), default=0)
    unchanged: Mapped[int] = mapped_column(Integer(), default=0)
    deleted: Mapped[int] = mapped_column(Integer(), default=0)
    failed: Mapped[int] = mapped_column(Integer(), default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    error: Mapped[str | None] = mapped_column(Text(), nullable=True)
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class SyncState(Base):
    """Where a calendar's sync stands: its saved cursor and its last outcome."""

    __tablename__ = "sync_state"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    calendar_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    last_run_id: Mapped[int | None] = mapped_column(BigIntPK, nullable=True)
    last_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
