"""Google Calendar v3 event resources → drafts, tombstones and per-entry errors.

Keys: a single event is ``(id, "")``; an instance of a recurring event is
``(recurringEventId, originalStartTime)`` with the original start in RFC 5545
basic format (UTC ``20261207T090000Z`` or a date ``20261207``), so that a
moved instance keeps its key and a cancelled one deletes exactly that
instance; a cancelled event that is not an instance deletes every entry of
its id (it may be a whole series). Google names an instance ``<recurringEventId>_<that same stamp>``,
which is how write-back finds it again (:func:`instance_id`).

Times: ``dateTime`` carries an offset (Google expands recurring events on
the server, so every instance already has the local time of its day, across
DST); ``timeZone`` is kept as the event's zone. A ``dateTime`` without an
offset is read in ``timeZone`` or the calendar's zone. All-day events have
``date`` values with an exclusive end, as the kernel wants them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chronos.plugin import WHOLE_SERIES, EventDraft

_STATUS = {"confirmed": "confirmed", "tentative": "tentative"}


@dataclass
class Page:
    drafts: list[EventDraft] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


def stamp(value: date | datetime) -> str:
    """RFC 5545 basic format (UTC for date-times); the year always has four digits."""
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        return f"{value.year:04d}{value:%m%dT%H%M%S}Z"
    return f"{value.year:04d}{value:%m%d}"


def instance_id(uid: str, recurrence_id: str) -> str:
    """The Google event id of an instance (or of a single event when ``recurrence_id`` is "")."""
    return f"{uid}_{recurrence_id}" if recurrence_id else uid


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def when(value: Any, calendar_zone: str | None) -> tuple[date | datetime, str | None]:
    """A ``start``/``end``/``originalStartTime`` object → (date or aware datetime, zone name)."""
    if not isinstance(value, dict):
        raise ValueError("missing start or end")
    if value.get("date"):
        return date.fromisoformat(str(value["date"])), None
    raw = value.get("dateTime")
    if not raw:
        raise ValueError("a time has neither date nor dateTime")
    parsed = datetime.fromisoformat(str(raw))
    zone_name = value.get("timeZone") or None
    if parsed.tzinfo is None:
        tz = _zone(zone_name or calendar_zone)
        if tz is None:
            raise ValueError(f"the time {raw!r} has no offset and no time zone")
        parsed = parsed.replace(tzinfo=tz)
    return parsed, zone_name


def key_of(item: dict[str, Any], calendar_zone: str | None) -> tuple[str, str]:
    """``(uid, recurrence_id)`` of an event resource."""
    series = item.get("recurringEventId")
    if series and item.get("originalStartTime"):
        original, _ = when(item["originalStartTime"], calendar_zone)
        return str(series), stamp(original)
    return str(item.get("id") or ""), ""


def convert(items: list[Any], calendar_zone: str | None) -> Page:
    """One page of ``events.list`` items."""
    page = Page()
    for item in items:
        if not isinstance(item, dict) or not item.get("id"):
            page.errors.append(("(unknown)", "an item without an id"))
            continue
        try:
            uid, rid = key_of(item, calendar_zone)
        except ValueError as exc:
            page.errors.append((str(item["id"]), f"originalStartTime: {exc}"))
            continue
        if item.get("status") == "cancelled":
            # A cancelled event that is not an instance may be a whole recurring series:
            # delete the uid with every instance stored under it.
            page.deleted.append((uid, rid or WHOLE_SERIES))
            continue
        try:
            page.drafts.append(draft(item, uid, rid, calendar_zone))
        except (ValueError, TypeError) as exc:
            page.errors.append((uid, str(exc)[:500]))
    return page


def draft(item: dict[str, Any], uid: str, rid: str, calendar_zone: str | None) -> EventDraft:
    start, zone_name = when(item.get("start"), calendar_zone)
    end, _ = when(item.get("end"), calendar_zone)
    if isinstance(start, datetime) and zone_name is None and calendar_zone:
        zone_name = calendar_zone
    if isinstance(start, date) and not isinstance(start, datetime):
        zone_name = None  # all-day: whole dates, no zone
    metadata: dict[str, Any] = {"google_id": item["id"]}
    if item.get("htmlLink"):
        metadata["url"] = str(item["htmlLink"])
    return EventDraft(
        uid=uid,
        recurrence_id=rid or None,
        start=start,
        end=end,
        title=str(item.get("summary") or ""),
        description=str(item.get("description") or ""),
        location=str(item.get("location") or ""),
        timezone=zone_name,
        status=_STATUS.get(str(item.get("status") or "confirmed"), "confirmed"),  # type: ignore[arg-type]
        transparency="free" if item.get("transparency") == "transparent" else "busy",
        metadata=metadata,
    )
