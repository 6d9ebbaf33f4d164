"""Shared helpers for the events plugin's tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from chronos.plugin import CanonicalEvent, EventKey, EventStore

T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


def ev(
    uid: str, start: datetime, minutes: float = 60, *, calendar: str = "work", source: str = "ics", **kw: Any
) -> CanonicalEvent:
    return CanonicalEvent(
        source=source,
        calendar_id=calendar,
        uid=uid,
        start_utc=start,
        end_utc=start + timedelta(minutes=minutes),
        title=kw.pop("title", f"Event {uid}"),
        **kw,
    )


def all_day(uid: str, day: date, days: int = 1, **kw: Any) -> CanonicalEvent:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return ev(uid, start, minutes=days * 1440, all_day=True, start_date=day, end_date=day + timedelta(days=days), **kw)


async def apply(app: Any, upserts: list[CanonicalEvent], deletions: list[EventKey] | None = None) -> Any:
    ctx = app.state.chronos
    store = ctx.service(EventStore)
    async with ctx.db.write() as s:
        return await store.apply(s, upserts, deletions or [])


def z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
