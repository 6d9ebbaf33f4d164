"""Planning operations behind the API: conflicts, proposals, an event's proposals, rescheduling."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    Conflict,
    EventDraft,
    EventIntake,
    EventStore,
    InvalidInput,
    NotFound,
    Origin,
    PluginContext,
    Principal,
    StoredEvent,
    Unavailable,
    record_audit,
)

from chronos_planning import conflicts as store
from chronos_planning.models import EVENTS
from chronos_planning.proposals import Slot, SlotQuery, describe, find_slots, iso_z
from chronos_planning.rules import AUTO_PLAN, Roles, effective_mode
from chronos_planning.schemas import ProposalRequest
from chronos_planning.settings import PlanningSettings, WorkingHours

#: Events of this source live in local calendars: the only ones planning may move.
LOCAL_SOURCE = "local"
#: Years a window may cover: room for spans, buffers and time zones around it without leaving datetime's range.
SUPPORTED = (1900, 9000)


def invalid(pointer: str, detail: str) -> InvalidInput:
    return InvalidInput(
        f"The request is invalid: {pointer}: {detail}",
        type="validation",
        errors=[{"pointer": pointer, "detail": detail, "type": "value_error"}],
    )


# -- conflicts -----------------------------------------------------------------------------------


def instant(raw: str | None, name: str) -> datetime | None:
    """An ISO 8601 query value with an offset; 422 naming the parameter otherwise."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
        if value.tzinfo is None:
            raise ValueError
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise invalid(
            f"/query/{name}", "not an ISO 8601 date-time with an offset (e.g. 2030-03-04T09:00:00Z)"
        ) from None


async def list_conflicts(
    ctx: PluginContext,
    raw_start: str | None,
    raw_end: str | None,
    calendars: list[str],
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    settings = ctx.section(PlanningSettings)
    start, end = instant(raw_start, "from"), instant(raw_end, "to")
    longest = timedelta(days=settings.max_window_days)
    if start is None and end is None:
        start = datetime.now(UTC)
    if start is None and end is not None:
        start = end - timedelta(days=7)
    assert start is not None
    if end is None:
        end = start + timedelta(days=7)
    if not (SUPPORTED[0] <= start.year and end.year <= SUPPORTED[1]):
        raise invalid("/query/from", f"the window must lie in the years {SUPPORTED[0]} to {SUPPORTED[1]}")
    if end <= start:
        raise invalid("/query/to", "must be after `from`")
    if end - start > longest:
        raise invalid("/query/to", f"at most {settings.max_window_days} days after `from` (planning.max_window_days)")
    position = store.parse_cursor(cursor)
    if ctx.db.is_sqlite:
        # One SELECT reads one consistent WAL snapshot by itself: no session, one hop to the driver.
        async with ctx.db.reader.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection

            async def fetch_sqlite(sql: str, params: dict[str, Any]) -> list[Any]:
                return list(await driver.execute_fetchall(sql, params))

            return await store.list_conflicts(fetch_sqlite, "sqlite", start, end, calendars, position, limit)
    async with ctx.db.read() as s:

        async def fetch(sql: str, params: dict[str, Any]) -> list[Any]:
            return list((await s.execute(sa.text(sql), params)).all())

        return await store.list_conflicts(fetch, ctx.db.dialect, start, end, calendars, position, limit)


async def conflicting_ids(ctx: PluginContext, event_ids: list[int]) -> dict[int, list[int]]:
    async with ctx.db.read() as s:
        return await store.conflicting_ids(s, event_ids)


# -- proposals -----------------------------------------------------------------------------------


async def _known_calendars(ctx: PluginContext, session: AsyncSession, wanted: list[str], seen: set[str]) -> None:
    """Every calendar asked for is configured, has a planning policy, holds events in the window
    (``seen``) or at all; else 422. The common case costs no query."""
    settings = ctx.section(PlanningSettings)
    unknown = [(i, cal) for i, cal in enumerate(wanted) if cal not in seen and cal not in settings.calendars]
    if unknown and ctx.has_service(EventIntake):
        known = {c["calendar_id"] for c in await ctx.service(EventIntake).calendars()}
        unknown = [(i, cal) for i, cal in unknown if cal not in known]
    for i, cal in unknown:
        held = (await session.execute(sa.select(EVENTS.c.id).where(EVENTS.c.calendar_id == cal).limit(1))).first()
        if held is None:
            raise invalid(f"/calendars/{i}", f"unknown calendar {cal!r}")


def _hours(settings: PlanningSettings, calendars: list[str], override: WorkingHours | None) -> tuple[WorkingHours, str]:
    if override is not None:
        return override, "request"
    for cal in calendars:
        policy = settings.calendars.get(cal)
        if policy is not None and policy.working_hours is not None:
            return policy.working_hours, f"calendar:{cal}"
    return settings.working_hours, "global"


async def _holidays(session: AsyncSession, calendar: str | None, start: datetime, end: datetime) -> set[date]:
    if calendar is None:
        return set()
    span = await store.max_span(session)
    lo, hi = start - timedelta(days=2), end + timedelta(days=2)
    rows = await session.execute(
        sa.select(EVENTS.c.start_date, EVENTS.c.end_date).where(
            EVENTS.c.calendar_id == calendar,
            store.overlapping([(lo, hi)], span),
            EVENTS.c.all_day.is_(True),
            EVENTS.c.status != "cancelled",
        )
    )
    days: set[date] = set()
    for first, last in rows.all():
        if first is None or last is None:
            continue
        d = first
        while d < last and d <= hi.date():
            days.add(d)
            d += timedelta(days=1)
    return days


def _slot_out(slot: Slot, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "id": iso_z(slot.start),
        "rank": slot.rank,
        "start_utc": iso_z(slot.start),
        "end_utc": iso_z(slot.end),
        "local_start": slot.start.astimezone(tz).isoformat(),
        "explanation": slot.explanation,
        "avoided": slot.avoided,
    }


async def _plan(
    ctx: PluginContext,
    session: AsyncSession,
    *,
    duration: timedelta,
    start: datetime,
    end: datetime,
    calendars: list[str] | None,
    hours: WorkingHours,
    count: int,
    exclude: int | None = None,
) -> tuple[list[Slot], set[str]]:
    """Slots, and the calendars that have events in the (padded) window."""
    settings = ctx.section(PlanningSettings)
    pad = timedelta(minutes=max(hours.buffer_before_minutes, hours.buffer_after_minutes))
    found = await store.busy_in(session, start - pad, end + pad, calendars)
    busy = Roles(settings).blocking(found, exclude)
    holidays = await _holidays(session, hours.holidays_calendar, start, end)
    query = SlotQuery(
        duration=duration,
        start=start,
        end=end,
        hours=hours,
        count=count,
        step_minutes=settings.slot_step_minutes,
        now=datetime.now(UTC),
    )
    slots = find_slots(query, busy, holidays)
    # Busy times come from the calendar index alone: only the events the slots name are read.
    named = {b.id for x in slots for b in (x.follows, x.precedes) if b is not None}
    titles: dict[int, str] = {}
    if named:
        rows = await session.execute(sa.select(EVENTS.c.id, EVENTS.c.title).where(EVENTS.c.id.in_(sorted(named))))
        titles = {r[0]: r[1] for r in rows.all()}
    tz = ZoneInfo(hours.timezone)
    for x in slots:
        describe(x, tz, titles)
    return slots, {b.calendar_id for b in found}


async def propose(ctx: PluginContext, body: ProposalRequest) -> dict[str, Any]:
    settings = ctx.section(PlanningSettings)
    start, end = body.window.start.astimezone(UTC), body.window.end.astimezone(UTC)
    if not (SUPPORTED[0] <= start.year and end.year <= SUPPORTED[1]):
        raise invalid("/window/from", f"the window must lie in the years {SUPPORTED[0]} to {SUPPORTED[1]}")
    if end <= start:
        raise invalid("/window/to", "must be after `from`")
    if end - start > timedelta(days=settings.max_window_days):
        raise invalid("/window/to", f"at most {settings.max_window_days} days after `from` (planning.max_window_days)")
    duration = timedelta(minutes=body.duration_minutes)
    if duration > end - start:
        raise invalid("/duration_minutes", "longer than the window")
    if body.count > settings.max_proposals:
        raise invalid("/count", f"at most {settings.max_proposals} (planning.max_proposals)")
    calendars = list(dict.fromkeys(body.calendars))
    hours, origin = _hours(settings, calendars, body.working_hours)
    async with ctx.db.read() as s:
        slots, seen = await _plan(
            ctx, s, duration=duration, start=start, end=end, calendars=calendars, hours=hours, count=body.count
        )
        await _known_calendars(ctx, s, calendars, seen)
    tz = ZoneInfo(hours.timezone)
    return {"items": [_slot_out(x, tz) for x in slots], "timezone": hours.timezone, "working_hours_from": origin}


async def _event(ctx: PluginContext, session: AsyncSession, event_id: int) -> StoredEvent:
    stored = await ctx.service(EventStore).get(session, event_id)
    if stored is None:
        raise NotFound(f"No event with id {event_id}", type="not-found")
    return stored


async def _event_proposals(ctx: PluginContext, session: AsyncSession, stored: StoredEvent) -> dict[str, Any]:
    settings = ctx.section(PlanningSettings)
    busy = store.busy_of(stored)
    mode = effective_mode(busy, settings)
    ids = (await store.conflicting_ids(session, [stored.id]))[stored.id]
    calendars = [stored.event.calendar_id]
    if ids:
        rows = await session.execute(sa.select(EVENTS.c.calendar_id).where(EVENTS.c.id.in_(ids)).distinct())
        calendars += sorted({r[0] for r in rows.all()} - {stored.event.calendar_id})
    hours, origin = _hours(settings, calendars, None)
    slots: list[Slot] = []
    event = stored.event
    if mode == AUTO_PLAN and ids and not event.all_day:
        start = max(event.start_utc, datetime.now(UTC))
        slots, _ = await _plan(
            ctx,
            session,
            duration=event.end_utc - event.start_utc,
            start=start,
            end=start + timedelta(days=settings.reschedule_window_days),
            # An auto-plan event conflicts with blocking events of every calendar: its new slot avoids them all.
            calendars=None,
            hours=hours,
            count=min(5, settings.max_proposals),
            exclude=stored.id,
        )
    tz = ZoneInfo(hours.timezone)
    return {
        "event_id": stored.id,
        "mode": mode,
        "movable": event.source == LOCAL_SOURCE and not event.all_day,
        "conflicts": ids,
        "items": [_slot_out(x, tz) for x in slots],
        "timezone": hours.timezone,
        "working_hours_from": origin,
    }


async def event_proposals(ctx: PluginContext, event_id: int) -> dict[str, Any]:
    """Proposals for an auto-plan event in conflict (empty when it is free or has no conflict)."""
    async with ctx.db.read() as s:
        return await _event_proposals(ctx, s, await _event(ctx, s, event_id))


async def reschedule(
    ctx: PluginContext, event_id: int, proposal: str, *, principal: Principal, origin: Origin | None
) -> dict[str, Any]:
    """Move a local auto-plan event to one of its current proposals, through the pipeline; audited."""
    if not ctx.has_service(EventIntake):
        raise Unavailable("The sync pipeline is unavailable, so events cannot be moved", type="pipeline-unavailable")
    intake = ctx.service(EventIntake)
    async with ctx.db.write() as s:
        stored = await _event(ctx, s, event_id)
        event = stored.event
        if event.source != LOCAL_SOURCE or event.all_day:
            raise Conflict(
                f"Event {event_id} comes from {event.source}/{event.calendar_id}: only timed events of local"
                " calendars are moved; use its proposals at the source",
                type="not-movable",
            )
        offered = await _event_proposals(ctx, s, stored)
        chosen = next((p for p in offered["items"] if p["id"] == proposal), None)
        if chosen is None:
            raise Conflict(
                f"{proposal!r} is not a current proposal of event {event_id} (it has"
                f" {len(offered['items'])}); ask GET /api/v1/events/{event_id}/proposals again",
                type="stale-proposal",
            )
        new_start = datetime.fromisoformat(chosen["start_utc"])
        new_end = datetime.fromisoformat(chosen["end_utc"])
        draft = EventDraft(
            uid=event.uid,
            start=new_start,
            end=new_end,
            recurrence_id=event.recurrence_id or None,
            title=event.title,
            description=event.description,
            location=event.location,
            timezone=event.timezone,
            status=event.status,
            transparency=event.transparency,
            mode=event.mode,
            tags=list(event.tags),
            metadata=dict(event.metadata),
            source=event.source,
            calendar_id=event.calendar_id,
        )
        await intake.ingest(event.source, event.calendar_id, [draft], session=s, principal=principal)
        previous = {"start": iso_z(event.start_utc), "end": iso_z(event.end_utc)}
        await record_audit(
            s,
            entity="event",
            action="reschedule",
            entity_id=event_id,
            change={"previous": previous, "start_utc": chosen["start_utc"], "end_utc": chosen["end_utc"]},
            principal=principal,
            origin=origin,
        )
    return {"event_id": event_id, "start_utc": chosen["start_utc"], "end_utc": chosen["end_utc"], "previous": previous}
