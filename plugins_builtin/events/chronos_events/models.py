"""The event store's tables.

``events`` and ``event_links`` are public tables named by the seed issue (other
plugins may reference ``events.id``); the rest carry the plugin's prefix.
Full-text search objects (the SQLite FTS5 table with its triggers, the
PostgreSQL GIN expression index) are not mapped here: the migration creates
them and :mod:`chronos_events.search` re-creates the SQLite triggers after
every migration run.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from chronos.plugin import Base, BigIntPK, JSONType, UTCDateTime, utcnow

from chronos_events.search import PG_INDEX

# The PostgreSQL full-text GIN index is raw DDL in the revision (an expression
# over three columns, on one backend only); schema comparison leaves it alone.
Base.metadata.info.setdefault("unmapped_indexes", set()).add(PG_INDEX)


class Event(Base):
    """One canonical event (an instance, for recurring series)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "calendar_id", "uid", "recurrence_id"),
        # Window queries: start_utc is the range column, id the keyset
        # tie-breaker (so the index order is the list order); end_utc last so
        # the overlap test runs on index entries without reading the rows.
        Index("ix_events_start", "start_utc", "id", "end_utc"),
        # The calendar's window, with what a free/busy lookup filters and returns (events0006).
        Index(
            "ix_events_calendar_start",
            *("calendar_id", "start_utc", "id", "end_utc", "transparency", "status", "all_day", "mode"),
        ),
        # SQLite: a deleted event's id is never handed out again (revision events0003).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    calendar_id: Mapped[str] = mapped_column(String(200))
    uid: Mapped[str] = mapped_column(String(1024))
    recurrence_id: Mapped[str] = mapped_column(String(64), default="")
    title: Mapped[str] = mapped_column(String(2000), default="")
    description: Mapped[str] = mapped_column(Text(), default="")
    location: Mapped[str] = mapped_column(String(2000), default="")
    start_utc: Mapped[datetime] = mapped_column(UTCDateTime())
    end_utc: Mapped[datetime] = mapped_column(UTCDateTime())
    # end - start in whole seconds (rounded up): bounds overlap queries.
    duration_seconds: Mapped[int] = mapped_column(Integer(), default=0)
    all_day: Mapped[bool] = mapped_column(Boolean(), default=False)
    start_date: Mapped[date | None] = mapped_column(Date(), nullable=True)
    end_date: Mapped[date | None] = mapped_column(Date(), nullable=True)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="confirmed")
    transparency: Mapped[str] = mapped_column(String(8), default="busy")
    # free, auto-plan, or NULL: the calendar's default (planning.calendars.<id>.default_mode).
    mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    sub_tasks: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    all_done: Mapped[bool] = mapped_column(Boolean(), default=False)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    # Hash of what is stored now (after local edits) and of the version the
    # pipeline last delivered: a sync compares against the latter, so local
    # edits survive re-syncs of an unchanged source entry.
    content_hash: Mapped[str] = mapped_column(String(64))
    source_hash: Mapped[str] = mapped_column(String(64))
    # Local edits (PATCH, update_metadata) re-applied when the source changes.
    local_overrides: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class EventLink(Base):
    """A typed, directed link between two events (blocks, relates, follows)."""

    __tablename__ = "event_links"
    __table_args__ = (
        UniqueConstraint("from_event_id", "to_event_id", "type"),
        CheckConstraint("from_event_id <> to_event_id", name="no_self_link"),
        Index("ix_event_links_to", "to_event_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    from_event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    to_event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class EventTombstone(Base):
    """A source key that must not be imported again (consumed or deleted locally)."""

    __tablename__ = "events_tombstones"
    __table_args__ = (UniqueConstraint("source", "calendar_id", "uid", "recurrence_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    calendar_id: Mapped[str] = mapped_column(String(200))
    uid: Mapped[str] = mapped_column(String(1024))
    recurrence_id: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class EventSpan(Base):
    """The longest duration stored per calendar, an upper bound kept by every write.

    Overlap queries (``start < :to AND end > :from``) add
    ``start >= :from - max_duration`` so the start index bounds the scan.
    Deletions leave the bound high, which is still correct.
    """

    __tablename__ = "events_spans"

    calendar_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    max_duration_seconds: Mapped[int] = mapped_column(Integer(), default=0)


class FeedToken(Base):
    """A per-feed secret for ICS subscriptions (``?token=``); only its hash is stored."""

    __tablename__ = "events_feed_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # None: the feed of all calendars (valid for every calendar's feed too).
    calendar_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The API key that created the token: the token dies with it (revoked or expired).
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # None only for tokens created before expiry existed (they live as long as their key).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
