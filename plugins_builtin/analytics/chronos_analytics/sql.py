"""The analytics SQL for both backends: time buckets, busy islands, checklist counts.

Every duration is summed in SQL as whole seconds (an integer on both
backends), so SQLite and PostgreSQL give identical numbers. Local buckets
(hours, days, weeks in a named zone) are computed in Python, DST-correct, and
passed as one JSON parameter: SQL joins them to the ``events`` start index.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text


class Dialect:
    """SQL fragments that differ between SQLite and PostgreSQL."""

    def __init__(self, name: str) -> None:
        self.sqlite = name == "sqlite"

    def t(self, value: datetime) -> Any:
        """A bound UTC instant as the column stores it."""
        if self.sqlite:
            return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]
        return value.astimezone(UTC)

    def parse(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)

    def seconds(self, start: str, end: str) -> str:
        if self.sqlite:
            return f"CAST(ROUND((julianday({end}) - julianday({start})) * 86400.0) AS INTEGER)"
        return f"CAST(ROUND(EXTRACT(EPOCH FROM ({end} - {start}))) AS BIGINT)"

    def greatest(self, a: str, b: str) -> str:
        return f"MAX({a}, {b})" if self.sqlite else f"GREATEST({a}, {b})"

    def least(self, a: str, b: str) -> str:
        return f"MIN({a}, {b})" if self.sqlite else f"LEAST({a}, {b})"

    def param_time(self, name: str) -> str:
        return f":{name}" if self.sqlite else f"CAST(:{name} AS timestamptz)"

    def buckets(self, name: str) -> str:
        """A relation ``(lo, hi, ls, k)`` from the JSON parameter ``name``."""
        if self.sqlite:
            return (
                "(SELECT json_extract(value, '$[0]') AS lo, json_extract(value, '$[1]') AS hi,"
                f" json_extract(value, '$[2]') AS ls, json_extract(value, '$[3]') AS k FROM json_each(:{name}))"
            )
        return (
            "(SELECT CAST(x->>0 AS timestamptz) AS lo, CAST(x->>1 AS timestamptz) AS hi,"
            f" CAST(x->>2 AS timestamptz) AS ls, x->>3 AS k FROM jsonb_array_elements(CAST(:{name} AS jsonb)) AS x)"
        )

    def tags(self, alias: str) -> str:
        if self.sqlite:
            return f"json_each({alias}.tags) AS j"
        return f"jsonb_array_elements_text({alias}.tags) AS j(value)"

    def tag_count(self, column: str) -> str:
        return f"json_array_length({column})" if self.sqlite else f"jsonb_array_length({column})"

    def sub_tasks(self, alias: str) -> tuple[str, str]:
        """The FROM item over the sub-task array and the expression of one item's done flag as 0/1."""
        if self.sqlite:
            return f"json_each({alias}.sub_tasks) AS st", "CASE WHEN json_extract(st.value, '$.done') THEN 1 ELSE 0 END"
        return (
            f"jsonb_array_elements({alias}.sub_tasks) AS st(value)",
            "CASE WHEN (st.value->>'done') = 'true' THEN 1 ELSE 0 END",
        )

    def after_gap(self, later: str, earlier: str, gap_seconds: int) -> str:
        """``later`` is more than ``gap_seconds`` after ``earlier``."""
        if self.sqlite:
            return f"julianday({later}) > julianday({earlier}) + {gap_seconds / 86400.0!r}"
        return f"{later} > {earlier} + make_interval(secs => {int(gap_seconds)})"


async def rows(session: Any, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """Rows of ``sql``: through a session, or a ``fetch(sql, params)`` callable (SQLite's driver)."""
    if callable(session):
        return list(await session(sql, dict(params)))
    return list((await session.execute(text(sql), dict(params))).all())


async def longest_span(session: Any) -> timedelta:
    """The event store's bound on event durations (``events_spans``), to bound scans by the start index."""
    (value,) = (await rows(session, "SELECT COALESCE(MAX(max_duration_seconds), 0) FROM events_spans", {}))[0]
    return timedelta(seconds=int(value or 0))


# -- filters -----------------------------------------------------------------------------------


def window_filter(
    d: Dialect,
    params: dict[str, Any],
    lower: datetime,
    upper: datetime,
    span: timedelta,
    calendars: Sequence[str],
    busy_only: bool,
    alias: str = "e",
) -> str:
    """Events overlapping ``[lower, upper)``, not cancelled (and busy), in ``calendars`` (all when empty)."""
    params.update(lo=d.t(lower), hi=d.t(upper), lo_span=d.t(lower - span))
    clauses = [
        f"{alias}.start_utc < :hi",
        f"{alias}.start_utc >= :lo_span",
        f"{alias}.end_utc > :lo",
        f"{alias}.status <> 'cancelled'",
    ]
    if busy_only:
        clauses.append(f"{alias}.transparency = 'busy'")
    if calendars:
        names = []
        for i, cal in enumerate(calendars):
            params[f"cal{i}"] = cal
            names.append(f":cal{i}")
        clauses.append(f"{alias}.calendar_id IN ({', '.join(names)})")
    return " AND ".join(clauses)


# -- local buckets -----------------------------------------------------------------------------


def local_days(lower: datetime, upper: datetime, tz: ZoneInfo) -> list[tuple[date, datetime, datetime]]:
    """Local calendar days overlapping the window, as ``(day, utc start, utc end)`` clipped to it."""
    out = []
    d = lower.astimezone(tz).date()
    while True:
        start = datetime.combine(d, time(), tz).astimezone(UTC)
        end = datetime.combine(d + timedelta(days=1), time(), tz).astimezone(UTC)
        if start >= upper:
            break
        if end > lower:
            out.append((d, max(start, lower), min(end, upper)))
        d += timedelta(days=1)
    return out


def local_hours(lower: datetime, upper: datetime, tz: ZoneInfo) -> list[tuple[int, datetime, datetime]]:
    """Local clock hours overlapping the window as ``(hour 0-23, utc start, utc end)``; walking UTC
    means the hour that does not exist has no bucket and the repeated one has two."""
    out = []
    local = lower.astimezone(tz)
    t = (local - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)).astimezone(UTC)
    while t < upper:
        nxt = t + timedelta(hours=1)
        nxt_local = nxt.astimezone(tz)
        if nxt_local.minute or nxt_local.second:  # a zone whose offset changed by a fraction of an hour
            nxt = (nxt_local - timedelta(minutes=nxt_local.minute, seconds=nxt_local.second)).astimezone(UTC)
            if nxt <= t:
                nxt = t + timedelta(hours=1)
        if nxt > lower:
            out.append((t.astimezone(tz).hour, max(t, lower), min(nxt, upper)))
        t = nxt
    return out


def bucket_param(d: Dialect, buckets: Sequence[tuple[Any, datetime, datetime]], span: timedelta) -> str:
    def s(v: datetime) -> str:
        return d.t(v) if d.sqlite else v.astimezone(UTC).isoformat()

    return json.dumps([[s(lo), s(hi), s(lo - span), str(k)] for k, lo, hi in buckets])


async def bucketed_seconds(
    session: Any,
    d: Dialect,
    buckets: Sequence[tuple[Any, datetime, datetime]],
    where: str,
    params: dict[str, Any],
) -> dict[str, tuple[int, int]]:
    """Busy seconds and overlapping events per bucket key: one GROUP BY over the buckets joined
    to the start index (the buckets drive the join)."""
    if not buckets:
        return {}
    s = d.greatest("e.start_utc", "b.lo")
    e = d.least("e.end_utc", "b.hi")
    join = "CROSS JOIN" if d.sqlite else "JOIN"  # SQLite: keep the buckets as the outer loop
    on = "" if d.sqlite else " ON true"
    sql = (
        f"SELECT b.k, SUM({d.seconds(s, e)}), COUNT(*) FROM {d.buckets('buckets')} AS b {join} events AS e{on}"
        f" WHERE e.start_utc < b.hi AND e.start_utc >= b.ls AND e.end_utc > b.lo AND {where} GROUP BY b.k"
    )
    return {str(k): (int(sec or 0), int(n)) for k, sec, n in await rows(session, sql, params)}


# -- plain groups ------------------------------------------------------------------------------


async def grouped_seconds(
    session: Any, d: Dialect, group: str, where: str, params: dict[str, Any]
) -> dict[str | None, tuple[int, int]]:
    """Seconds inside the window and events per calendar or per tag (``None``: untagged)."""
    s = d.greatest("e.start_utc", d.param_time("lo"))
    e = d.least("e.end_utc", d.param_time("hi"))
    secs = d.seconds(s, e)
    if group == "calendar":
        sql = f"SELECT e.calendar_id, SUM({secs}), COUNT(*) FROM events AS e WHERE {where} GROUP BY e.calendar_id"
        return {k: (int(v or 0), int(n)) for k, v, n in await rows(session, sql, params)}
    tagged = f"SELECT j.value, SUM({secs}), COUNT(*) FROM events AS e, {d.tags('e')} WHERE {where} GROUP BY j.value"
    out: dict[str | None, tuple[int, int]] = {
        k: (int(v or 0), int(n)) for k, v, n in await rows(session, tagged, params)
    }
    untagged = f"SELECT SUM({secs}), COUNT(*) FROM events AS e WHERE {where} AND {d.tag_count('e.tags')} = 0"
    (v, n) = (await rows(session, untagged, params))[0]
    if n:
        out[None] = (int(v or 0), int(n))
    return out


# -- busy islands ------------------------------------------------------------------------------


async def islands(
    session: Any, d: Dialect, where: str, params: dict[str, Any], gap_seconds: int = 0
) -> list[tuple[datetime, datetime, int]]:
    """The events matching ``where`` merged into islands, clipped to the window: intervals
    closer than ``gap_seconds`` join. ``(start, end, events)`` in order, in one statement."""
    s = d.greatest("e.start_utc", d.param_time("lo"))
    e = d.least("e.end_utc", d.param_time("hi"))
    sql = (
        f"WITH b AS (SELECT {s} AS s, {e} AS e FROM events AS e WHERE {where}),"
        " o AS (SELECT s, e, MAX(e) OVER (ORDER BY s, e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS pe"
        " FROM b WHERE e > s),"
        f" g AS (SELECT s, e, SUM(CASE WHEN pe IS NULL OR {d.after_gap('s', 'pe', gap_seconds)} THEN 1 ELSE 0 END)"
        " OVER (ORDER BY s, e ROWS UNBOUNDED PRECEDING) AS grp FROM o)"
        " SELECT MIN(s), MAX(e), COUNT(*) FROM g GROUP BY grp ORDER BY 1"
    )
    return [(d.parse(a), d.parse(b), int(n)) for a, b, n in await rows(session, sql, params)]


async def checklist_counts(session: Any, d: Dialect, where: str, params: dict[str, Any]) -> tuple[int, int]:
    """Sub-task items and the done ones over the events matching ``where``."""
    source, done = d.sub_tasks("e")
    sql = f"SELECT COUNT(*), COALESCE(SUM({done}), 0) FROM events AS e, {source} WHERE {where}"
    total, finished = (await rows(session, sql, params))[0]
    return int(total), int(finished or 0)
