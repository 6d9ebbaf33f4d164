"""Follow-up labels: tags on events of heavy days and of long back-to-back chains (rules, no AI)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import CanonicalEvent, Enricher, PluginContext

from chronos_analytics import sql
from chronos_analytics.settings import AnalyticsSettings


class FollowUpLabels(Enricher):
    """Tags a batch's busy events that fall on a heavy day (more busy hours than
    ``followups.heavy_day_hours``, overlaps counted once) or in a back-to-back chain longer than
    ``followups.chain_minutes``, counting the stored events of those days too (one query per batch).

    Labels are decided when an event is synced or created: an event stored earlier keeps its tags
    until it changes (the summary reports the current state)."""

    name = "analytics.followups"
    order = 400

    async def enrich(self, events: list[CanonicalEvent], session: AsyncSession, ctx: PluginContext) -> None:
        settings = ctx.section(AnalyticsSettings)
        rules = settings.followups
        mine = [e for e in events if _busy(e)]
        if not rules.enabled or not mine:
            return
        tz = ZoneInfo(settings.timezone)
        days = sorted({d for e in mine for d in _local_days(e.start_utc, e.end_utc, tz)})
        stored = await _stored(session, days, tz, {e.key for e in events})
        intervals = sorted([(e.start_utc, e.end_utc) for e in mine] + stored)
        gap = timedelta(minutes=settings.back_to_back_gap_minutes)
        heavy = {day for day in days if _busy_seconds(intervals, day, tz) > rules.heavy_day_hours * 3600}
        chains = _chains(intervals, gap)
        long_chains = [(a, b) for a, b, n in chains if n >= 2 and b - a > timedelta(minutes=rules.chain_minutes)]
        for e in mine:
            tags = list(e.tags)
            if heavy & set(_local_days(e.start_utc, e.end_utc, tz)) and rules.heavy_day_tag not in tags:
                tags.append(rules.heavy_day_tag)
            if any(a <= e.start_utc and e.end_utc <= b for a, b in long_chains) and rules.chain_tag not in tags:
                tags.append(rules.chain_tag)
            e.tags = tags


def _busy(e: CanonicalEvent) -> bool:
    return e.transparency == "busy" and e.status != "cancelled" and not e.all_day and e.end_utc > e.start_utc


def _local_days(start: datetime, end: datetime, tz: ZoneInfo) -> list[Any]:
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)][:31]


async def _stored(
    session: AsyncSession, days: list[Any], tz: ZoneInfo, keys: set[Any]
) -> list[tuple[datetime, datetime]]:
    """Stored busy timed events of the batch's local days (the days drive the start index, one
    statement), without the batch's own previous versions."""
    d = sql.Dialect(session.get_bind().dialect.name)
    span = await sql.longest_span(session)
    spans = [
        (
            day,
            datetime.combine(day, datetime.min.time(), tz).astimezone(UTC),
            datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).astimezone(UTC),
        )
        for day in days
    ]
    join = "CROSS JOIN" if d.sqlite else "JOIN"
    on = "" if d.sqlite else " ON true"
    rows = await session.execute(
        text(
            f"SELECT DISTINCT e.source, e.calendar_id, e.uid, e.recurrence_id, e.start_utc, e.end_utc"
            f" FROM {d.buckets('days')} AS b {join} events AS e{on} WHERE e.start_utc < b.hi"
            " AND e.start_utc >= b.ls AND e.end_utc > b.lo AND e.transparency = 'busy'"
            " AND e.status <> 'cancelled' AND e.all_day = :no"
        ),
        {"days": sql.bucket_param(d, spans, span), "no": False},
    )
    return [(d.parse(s), d.parse(e)) for src, cal, uid, rid, s, e in rows.all() if (src, cal, uid, rid) not in keys]


def _busy_seconds(intervals: list[tuple[datetime, datetime]], day: Any, tz: ZoneInfo) -> float:
    lo = datetime.combine(day, datetime.min.time(), tz).astimezone(UTC)
    hi = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).astimezone(UTC)
    total, cursor = 0.0, lo
    for a, b in intervals:
        a, b = max(a, cursor), min(b, hi)
        if b > a:
            total += (b - a).total_seconds()
            cursor = b
    return total


def _chains(intervals: list[tuple[datetime, datetime]], gap: timedelta) -> list[tuple[datetime, datetime, int]]:
    out: list[tuple[datetime, datetime, int]] = []
    for a, b in intervals:
        if out and a <= out[-1][1] + gap:
            s, e, n = out[-1]
            out[-1] = (s, max(e, b), n + 1)
        else:
            out.append((a, b, 1))
    return out
