"""Analytics behind the API: time allocation, the summary, and the event list's projection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import EventAnalytics, InvalidInput, PluginContext

from chronos_analytics import sql
from chronos_analytics.settings import AnalyticsSettings, known_zone

GroupBy = Literal["tag", "calendar", "weekday", "hour"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Years a window may cover (room for spans and time zones around it).
SUPPORTED = (1900, 9000)


def invalid(name: str, detail: str) -> InvalidInput:
    return InvalidInput(
        f"The request is invalid: /query/{name}: {detail}",
        type="validation",
        errors=[{"pointer": f"/query/{name}", "location": "query", "detail": detail, "type": "value_error"}],
    )


def iso_z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def minutes(seconds: int) -> float:
    return round(seconds / 60, 2)


def instant(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
        if value.tzinfo is None:
            raise ValueError
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise invalid(name, "not an ISO 8601 date-time with an offset (e.g. 2030-03-04T09:00:00Z)") from None


def window(
    settings: AnalyticsSettings, raw_from: str | None, raw_to: str | None, zone: str | None
) -> tuple[datetime, datetime, ZoneInfo]:
    """The request's window (default: the last 30 days up to now) and time zone; 422 naming the parameter."""
    name = zone or settings.timezone
    if not known_zone(name):
        raise invalid("timezone", f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)")
    start, end = instant(raw_from, "from"), instant(raw_to, "to")
    if end is None:
        end = start + timedelta(days=30) if start is not None else datetime.now(UTC)
    if start is None:
        start = end - timedelta(days=30)
    if not (SUPPORTED[0] <= start.year and end.year <= SUPPORTED[1]):
        raise invalid("from", f"the window must lie in the years {SUPPORTED[0]} to {SUPPORTED[1]}")
    if end <= start:
        raise invalid("to", "must be after `from`")
    if end - start > timedelta(days=settings.max_window_days):
        raise invalid("to", f"at most {settings.max_window_days} days after `from` (analytics.max_window_days)")
    return start, end, ZoneInfo(name)


@asynccontextmanager
async def reading(ctx: PluginContext) -> AsyncIterator[Any]:
    """What the read queries run on: on SQLite the driver of a pooled read connection (each SELECT
    reads one WAL snapshot by itself, one hop per statement, no session), else a read session."""
    if not ctx.db.is_sqlite:
        async with ctx.db.read() as s:
            yield s
        return
    async with ctx.db.reader.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection

        async def fetch(statement: str, params: dict[str, Any]) -> list[Any]:
            return list(await driver.execute_fetchall(statement, params))

        yield fetch


# -- time allocation ---------------------------------------------------------------------------


async def time_allocation(
    ctx: PluginContext,
    raw_from: str | None,
    raw_to: str | None,
    group_by: GroupBy,
    zone: str | None,
    calendars: list[str],
    busy_only: bool,
) -> dict[str, Any]:
    settings = ctx.section(AnalyticsSettings)
    lower, upper, tz = window(settings, raw_from, raw_to, zone)
    d = sql.Dialect(ctx.db.dialect)
    async with reading(ctx) as s:
        span = await sql.longest_span(s)
        params: dict[str, Any] = {}
        where = sql.window_filter(d, params, lower, upper, span, calendars, busy_only)
        if group_by in ("calendar", "tag"):
            found = await sql.grouped_seconds(s, d, group_by, where, params)
            buckets = [
                {"key": k, "minutes": minutes(v), "events": n}
                for k, (v, n) in sorted(found.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
            ]
        else:
            spans: list[tuple[Any, datetime, datetime]]
            if group_by == "weekday":
                spans = [(day.weekday(), lo, hi) for day, lo, hi in sql.local_days(lower, upper, tz)]
            else:
                spans = list(sql.local_hours(lower, upper, tz))
            params["buckets"] = sql.bucket_param(d, spans, span)
            found_b = await sql.bucketed_seconds(s, d, spans, where, params)
            keys = range(7) if group_by == "weekday" else range(24)
            buckets = [
                {
                    "key": WEEKDAYS[k] if group_by == "weekday" else k,
                    "minutes": minutes(found_b.get(str(k), (0, 0))[0]),
                    "events": found_b.get(str(k), (0, 0))[1],
                }
                for k in keys
            ]
    return {
        "window": {"from": iso_z(lower), "to": iso_z(upper)},
        "group_by": group_by,
        "timezone": tz.key,
        "busy_only": busy_only,
        "total_minutes": round(sum(b["minutes"] for b in buckets), 2) if group_by != "tag" else None,
        "buckets": buckets,
    }


# -- summary -----------------------------------------------------------------------------------


def _overlap(a: datetime, b: datetime, c: datetime, d: datetime) -> float:
    return max(0.0, (min(b, d) - max(a, c)).total_seconds())


async def summarize(
    ctx: PluginContext, raw_from: str | None, raw_to: str | None, zone: str | None, calendars: list[str]
) -> dict[str, Any]:
    """Busy hours per local week, the longest free block per local day, back-to-back chains,
    the checklist completion rate, and the days and chains the follow-up rules flag."""
    settings = ctx.section(AnalyticsSettings)
    rules = settings.followups
    lower, upper, tz = window(settings, raw_from, raw_to, zone)
    d = sql.Dialect(ctx.db.dialect)
    async with ctx.db.read() as s:
        span = await sql.longest_span(s)
        params: dict[str, Any] = {}
        busy_where = sql.window_filter(d, params, lower, upper, span, calendars, True)
        busy = await sql.islands(s, d, busy_where, params)
        chains = await sql.islands(s, d, busy_where, params, settings.back_to_back_gap_minutes * 60)
        all_where = sql.window_filter(d, dict(params), lower, upper, span, calendars, False)
        total, done = await sql.checklist_counts(s, d, all_where, params)
    days = sql.local_days(lower, upper, tz)
    per_day = []
    heavy = []
    for day, lo, hi in days:
        covered = sum(_overlap(a, b, lo, hi) for a, b, _ in busy)
        longest, cursor, at = timedelta(0), lo, (lo, lo)
        for a, b, _ in busy:
            if b <= lo or a >= hi:
                continue
            if a > cursor and a - cursor > longest:
                longest, at = a - cursor, (cursor, a)
            cursor = max(cursor, b)
        if hi > cursor and hi - cursor > longest:
            longest, at = hi - cursor, (cursor, hi)
        hours = round(covered / 3600, 2)
        per_day.append(
            {
                "date": day.isoformat(),
                "busy_hours": hours,
                "longest_free_minutes": minutes(int(longest.total_seconds())),
                "longest_free": {"start": iso_z(at[0]), "end": iso_z(at[1])} if longest else None,
            }
        )
        if hours > rules.heavy_day_hours:
            heavy.append(day.isoformat())
    weeks: dict[date, float] = {}
    for day, lo, hi in days:
        monday = day - timedelta(days=day.weekday())
        weeks[monday] = weeks.get(monday, 0.0) + sum(_overlap(a, b, lo, hi) for a, b, _ in busy)
    linked = [(a, b, n) for a, b, n in chains if n >= 2]
    long_chains = [c for c in linked if (c[1] - c[0]) > timedelta(minutes=rules.chain_minutes)]
    return {
        "window": {"from": iso_z(lower), "to": iso_z(upper)},
        "timezone": tz.key,
        "busy_hours_per_week": [
            {"week_start": k.isoformat(), "busy_hours": round(v / 3600, 2)} for k, v in sorted(weeks.items())
        ],
        "days": per_day,
        "back_to_back": {
            "gap_minutes": settings.back_to_back_gap_minutes,
            "chains": len(linked),
            "longest_minutes": minutes(int(max(((b - a).total_seconds() for a, b, _ in linked), default=0))),
            "items": [_chain(c) for c in linked[:100]],
        },
        "checklists": {"items": total, "done": done, "completion_rate": round(done / total, 4) if total else None},
        "followups": {
            "heavy_day_hours": rules.heavy_day_hours,
            "heavy_days": heavy,
            "chain_minutes": rules.chain_minutes,
            "long_chains": [_chain(c) for c in long_chains[:100]],
        },
    }


def _chain(c: tuple[datetime, datetime, int]) -> dict[str, Any]:
    return {
        "start": iso_z(c[0]),
        "end": iso_z(c[1]),
        "events": c[2],
        "minutes": minutes(int((c[1] - c[0]).total_seconds())),
    }


# -- the event list's projection ---------------------------------------------------------------


class SqlEventAnalytics(EventAnalytics):
    """``GET /api/v1/events?analytics=true``: counts and busy minutes over a list query's matches,
    with the islands query of the summary."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def projection(
        self,
        session: AsyncSession,
        where: str,
        params: Mapping[str, Any],
        lower: datetime | None,
        upper: datetime | None,
    ) -> dict[str, Any]:
        d = sql.Dialect(session.get_bind().dialect.name)
        cond = f" WHERE {where}" if where else ""
        p = dict(params)
        per_cal = {
            c: int(n)
            for c, n in await sql.rows(
                session, f"SELECT calendar_id, COUNT(*) FROM events{cond} GROUP BY calendar_id", p
            )
        }
        day = "substr(start_utc, 1, 10)" if d.sqlite else "to_char(start_utc AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        per_day = {
            str(k): int(n)
            for k, n in await sql.rows(session, f"SELECT {day} AS d, COUNT(*) FROM events{cond} GROUP BY d", p)
        }
        tags = d.tags("events")
        per_tag = {
            str(k): int(n)
            for k, n in await sql.rows(
                session, f"SELECT j.value, COUNT(*) FROM events, {tags}{cond} GROUP BY j.value", p
            )
        }
        busy_cond = (f"{where} AND " if where else "") + "transparency = 'busy' AND status <> 'cancelled'"
        lo = lower or datetime(1, 1, 2, tzinfo=UTC)
        hi = upper or datetime(9999, 12, 30, tzinfo=UTC)
        p.update(lo=d.t(lo), hi=d.t(hi))
        merged = await sql.islands(session, d, busy_cond.replace("events.", "e."), p)
        busy_seconds = sum((b - a).total_seconds() for a, b, _ in merged)
        return {
            "total": sum(per_cal.values()),
            "per_calendar": dict(sorted(per_cal.items())),
            "per_day": dict(sorted(per_day.items())),
            "per_tag": dict(sorted(per_tag.items())),
            "busy_minutes": round(busy_seconds / 60, 2),
        }
