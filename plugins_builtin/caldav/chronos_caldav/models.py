"""What the source remembers per calendar object, to turn hrefs back into events.

A sync-collection answer names deleted objects by href only, and a changed
recurring series may yield fewer instances than before: ``caldav_objects``
maps each href to its etag and the event keys it produced, so deletions and
vanished instances become tombstones without listing the calendar again.
``caldav_calendars.seq`` counts the mappings written; the cursor carries the
same number, so a run whose cursor was not saved (a failed item, a crash)
is noticed and followed by a full listing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from chronos.plugin import Base, JSONType


class CaldavCalendarState(Base):
    __tablename__ = "caldav_calendars"

    calendar_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)


class CaldavObject(Base):
    __tablename__ = "caldav_objects"
    __table_args__ = (Index("ix_caldav_objects_uid", "calendar_id", "uid"),)

    calendar_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    href: Mapped[str] = mapped_column(String(1024), primary_key=True)
    uid: Mapped[str] = mapped_column(String(1024))
    etag: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # [[uid, recurrence_id], ...]: the event keys this object produced at the last sync.
    keys: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    recurring: Mapped[bool] = mapped_column(Boolean, default=False)
