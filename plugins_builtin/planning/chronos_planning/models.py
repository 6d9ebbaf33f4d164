"""The planning plugin's tables, and the columns of the public ``events`` table it reads."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chronos.plugin import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class Conflict(Base):
    """One conflicting pair, ``event_a < event_b``, maintained by the conflicts sink.

    The overlap interval is what it was when the pair was last written; reads
    re-check the events' current times (a local edit does not pass the sink).
    Rows go with either event (``ON DELETE CASCADE``).
    """

    __tablename__ = "planning_conflicts"
    __table_args__ = (
        UniqueConstraint("event_a", "event_b"),
        Index("ix_planning_conflicts_b", "event_b"),
        # Window pages: overlap_start is the range column and id the keyset tie-breaker.
        Index("ix_planning_conflicts_window", "overlap_start", "id", "overlap_end"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_a: Mapped[int] = mapped_column(sa.BigInteger(), ForeignKey("events.id", ondelete="CASCADE"))
    event_b: Mapped[int] = mapped_column(sa.BigInteger(), ForeignKey("events.id", ondelete="CASCADE"))
    calendar_a: Mapped[str] = mapped_column(String(200))
    calendar_b: Mapped[str] = mapped_column(String(200))
    overlap_start: Mapped[datetime] = mapped_column(UTCDateTime())
    overlap_end: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(String(32))
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Span(Base):
    """The longest busy event the sink has seen: bounds every overlap scan by its start index."""

    __tablename__ = "planning_spans"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    max_duration_seconds: Mapped[int] = mapped_column(Integer(), default=0)


class Planned(Base):
    """Events whose own mode is auto-plan, by time: a free event of a batch can only conflict with
    these (or with events of calendars that plan or report everything), so its lookup is small."""

    __tablename__ = "planning_planned"
    __table_args__ = (Index("ix_planning_planned_start", "start_utc", "event_id", "end_utc"),)

    event_id: Mapped[int] = mapped_column(
        sa.BigInteger(), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    start_utc: Mapped[datetime] = mapped_column(UTCDateTime())
    end_utc: Mapped[datetime] = mapped_column(UTCDateTime())


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
