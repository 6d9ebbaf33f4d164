"""The planning plugin's tables, and the columns of the public ``events`` table it reads."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from chronos.plugin import Base, JSONType, UTCDateTime, utcnow


class Conflict(Base):
    """One conflicting pair, ``event_a < event_b``, maintained by the conflicts sink.

    Kept narrow, because a dense calendar has more pairs than events: no surrogate key (the
    pair is the key, ``event_b`` first so a sync's new events append), times as whole UTC
    seconds (the overlap widened to whole seconds: ``overlap_start`` floored, ``overlap_end``
    ceiled) and the reason as a code (:data:`REASONS`). The overlap is what it was when the
    pair was last written; reads take the exact interval from the events as they are now
    (a local edit does not pass the sink). Rows go with either event (``ON DELETE CASCADE``).
    """

    __tablename__ = "planning_pairs"
    __table_args__ = (
        Index("ix_planning_pairs_a", "event_a"),
        # Window pages: overlap_start is the range column, the pair the keyset tie-breaker; covering
        # (a page reads no table row of its own, only the two events').
        Index(
            "ix_planning_pairs_window", "overlap_start", "event_a", "event_b", "overlap_end", "reason", "detected_at"
        ),
        {"sqlite_with_rowid": False},
    )

    event_b: Mapped[int] = mapped_column(
        sa.BigInteger(), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    event_a: Mapped[int] = mapped_column(
        sa.BigInteger(), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    overlap_start: Mapped[int] = mapped_column(sa.BigInteger())
    overlap_end: Mapped[int] = mapped_column(sa.BigInteger())
    reason: Mapped[int] = mapped_column(sa.SmallInteger())
    detected_at: Mapped[int] = mapped_column(sa.BigInteger())


#: The stored codes of ``Conflict.reason``.
REASONS = {1: "auto-plan", 2: "all-overlaps"}
REASON_CODES = {v: k for k, v in REASONS.items()}


class Span(Base):
    """The longest busy event the sink has seen: bounds every overlap scan by its start index."""

    __tablename__ = "planning_spans"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    max_duration_seconds: Mapped[int] = mapped_column(Integer(), default=0)


class Planned(Base):
    """Events whose own mode is auto-plan and that are busy and not cancelled, by time: a free event
    of a batch can only conflict with these (or with events of calendars that plan or report
    everything), so its lookup is small. The index carries what pairing needs (calendar, all-day),
    so that lookup never reads the events table."""

    __tablename__ = "planning_planned"
    __table_args__ = (Index("ix_planning_planned_start", "start_utc", "event_id", "end_utc", "calendar_id", "all_day"),)

    event_id: Mapped[int] = mapped_column(
        sa.BigInteger(), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    start_utc: Mapped[datetime] = mapped_column(UTCDateTime())
    end_utc: Mapped[datetime] = mapped_column(UTCDateTime())
    calendar_id: Mapped[str] = mapped_column(String(200))
    all_day: Mapped[bool] = mapped_column(sa.Boolean())


class Published(Base):
    """Pairs already announced as ``event.conflict``: a pair is published once, even when it stops
    conflicting and conflicts again, and whatever the outbox keeps."""

    __tablename__ = "planning_published"

    event_a: Mapped[int] = mapped_column(
        sa.BigInteger(), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    event_b: Mapped[int] = mapped_column(
        sa.BigInteger(), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    published_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Backfill(Base):
    """Progress of the pass that computes the pairs of events stored before planning saw them
    (plugin enabled late, or the calendars' conflict settings changed): events with ids up to
    ``after_id`` are done under the settings ``fingerprint``; ``finished_at`` once all are."""

    __tablename__ = "planning_backfill"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    after_id: Mapped[int] = mapped_column(sa.BigInteger(), default=0)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


CONFLICTS = Conflict.__table__
BACKFILL = Backfill.__table__
PUBLISHED = Published.__table__
PLANNED = Planned.__table__
SPANS = Span.__table__

# The public ``events`` table (owned by the events plugin), as far as planning reads it.
EVENTS = sa.table(
    "events",
    sa.column("id", sa.BigInteger()),
    sa.column("source", sa.String()),
    sa.column("calendar_id", sa.String()),
    sa.column("uid", sa.String()),
    sa.column("title", sa.String()),
    sa.column("start_utc", UTCDateTime()),
    sa.column("end_utc", UTCDateTime()),
    sa.column("duration_seconds", sa.Integer()),
    sa.column("all_day", sa.Boolean()),
    sa.column("start_date", sa.Date()),
    sa.column("end_date", sa.Date()),
    sa.column("status", sa.String()),
    sa.column("transparency", sa.String()),
    sa.column("mode", sa.String()),
    sa.column("tags", JSONType),
)
