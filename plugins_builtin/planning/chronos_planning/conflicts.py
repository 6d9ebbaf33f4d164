"""Conflicts kept up to date as a pipeline sink, and read back by window or by event.

The sink works per batch, never per event: one read of the pairs the batch's
updated events were part of, one read of the events overlapping the batch's
intervals (merged into a few ranges on the start index), one insert and one
delete. A batch of unchanged items does not reach sinks; a batch whose events
cannot conflict with anything skips the reads.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    ConflictIndex,
    EventStore,
    Outbox,
    PluginContext,
    Publication,
    Sink,
    SinkBatch,
    StoredEvent,
    decode_cursor,
    encode_cursor,
    utcnow,
)

from chronos_planning.models import CONFLICTS, EVENTS, PLANNED, PUBLISHED, REASON_CODES, REASONS, SPANS
from chronos_planning.rules import AUTO_PLAN, Busy, Roles, conflict_reason, merge_intervals
from chronos_planning.settings import CalendarPolicy, PlanningSettings

CONFLICT_EVENT = "event.conflict"
SPAN_KEY = "events"
CHUNK = 500
#: New events' pairs written by one INSERT … SELECT (False: through ``pairs_for`` like updates;
#: ``bench/planning.py --python-pairs`` compares the two).
NEW_PAIRS_IN_SQL = True


def busy_of(stored: StoredEvent) -> Busy:
    e = stored.event
    return Busy(
        id=stored.id,
        calendar_id=e.calendar_id,
        start=e.start_utc,
        end=e.end_utc,
        mode=e.mode,
        all_day=e.all_day,
        busy=e.transparency == "busy",
        cancelled=e.status == "cancelled",
        title=e.title,
        source=e.source,
    )


def busy_of_row(row: Any) -> Busy:
    return Busy(
        id=row.id,
        calendar_id=row.calendar_id,
        start=row.start_utc,
        end=row.end_utc,
        mode=row.mode,
        all_day=bool(row.all_day),
        busy=row.transparency == "busy",
        cancelled=row.status == "cancelled",
        title=row.title,
        source=row.source,
    )


BUSY_COLUMNS = (
    EVENTS.c.id,
    EVENTS.c.source,
    EVENTS.c.calendar_id,
    EVENTS.c.title,
    EVENTS.c.start_utc,
    EVENTS.c.end_utc,
    EVENTS.c.all_day,
    EVENTS.c.status,
    EVENTS.c.transparency,
    EVENTS.c.mode,
)


def floor_s(value: datetime) -> int:
    """Whole UTC seconds, rounded down (a pair's stored overlap start)."""
    return math.floor(value.timestamp())


def ceil_s(value: datetime) -> int:
    """Whole UTC seconds, rounded up (a pair's stored overlap end)."""
    return math.ceil(value.timestamp())


def from_s(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


async def max_span(session: AsyncSession) -> timedelta:
    """The longest busy event seen (0 before any)."""
    value = (await session.execute(sa.select(SPANS.c.max_duration_seconds).where(SPANS.c.name == SPAN_KEY))).scalar()
    return timedelta(seconds=int(value or 0))


async def raise_span(session: AsyncSession, seconds: int, known: timedelta | None = None) -> timedelta:
    """Make the stored bound at least ``seconds``; returns the bound now in force."""
    current = known if known is not None else await max_span(session)
    if seconds <= current.total_seconds():
        return current
    updated = await session.execute(
        sa.update(SPANS).where(SPANS.c.name == SPAN_KEY).values(max_duration_seconds=seconds)
    )
    if not updated.rowcount:
        await session.execute(sa.insert(SPANS).values(name=SPAN_KEY, max_duration_seconds=seconds))
    return timedelta(seconds=seconds)


async def init_span(ctx: PluginContext) -> None:
    """On first start, bound the span by what the events table already holds (one scan, once)."""
    async with ctx.db.read() as s:
        known = (await s.execute(sa.select(SPANS.c.name).where(SPANS.c.name == SPAN_KEY))).first()
    if known is not None:
        return
    async with ctx.db.write() as s:
        longest = (await s.execute(sa.select(sa.func.max(EVENTS.c.duration_seconds)))).scalar()
        if (await s.execute(sa.select(SPANS.c.name).where(SPANS.c.name == SPAN_KEY))).first() is None:
            await s.execute(sa.insert(SPANS).values(name=SPAN_KEY, max_duration_seconds=int(longest or 0)))


def overlapping(ranges: list[tuple[datetime, datetime]], span: timedelta) -> Any:
    """Events overlapping any of ``ranges``, each bounded on the start index."""
    terms = [
        sa.and_(EVENTS.c.start_utc >= lo - span, EVENTS.c.start_utc < hi, EVENTS.c.end_utc > lo) for lo, hi in ranges
    ]
    return terms[0] if len(terms) == 1 else sa.or_(*terms)


class _Sql:
    """The candidate lookup's dialect: the batch's intervals travel as one JSON parameter and drive
    a nested loop over a start index (one range scan per interval, no scan of the table)."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"

    def t(self, value: datetime) -> str:
        if self.sqlite:
            return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]
        return value.astimezone(UTC).isoformat()

    def seconds(self, expr: str, *, up: bool = False) -> str:
        """A timestamp expression as whole UTC seconds, rounded down (up: rounded up)."""
        if self.sqlite:  # 'YYYY-MM-DD HH:MM:SS.ffffff', as stored and as :meth:`t` writes it
            whole = f"CAST(strftime('%s', {expr}) AS INTEGER)"
            return f"({whole} + (substr({expr}, 21, 6) > '000000'))" if up else whole
        return f"CAST({'ceil' if up else 'floor'}(extract(epoch FROM {expr})) AS bigint)"

    def parse(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.fromisoformat(f"{value}+00:00")  # stored as naive UTC text

    def intervals(self, name: str) -> str:
        """A common table expression ``name`` of the intervals in the JSON parameter ``:name``,
        materialised (read once, not once per probe of the join it drives)."""
        if self.sqlite:
            rows = (
                "SELECT json_extract(value, '$[0]') AS lo, json_extract(value, '$[1]') AS hi,"
                f" json_extract(value, '$[2]') AS ls FROM json_each(:{name})"
            )
        else:
            rows = (
                "SELECT CAST(x->>0 AS timestamptz) AS lo, CAST(x->>1 AS timestamptz) AS hi,"
                f" CAST(x->>2 AS timestamptz) AS ls FROM jsonb_array_elements(CAST(:{name} AS jsonb)) AS x"
            )
        return f"{name} AS MATERIALIZED ({rows})"

    @property
    def join(self) -> str:
        # SQLite keeps the intervals as the outer loop with CROSS JOIN; PostgreSQL plans it itself.
        return "CROSS JOIN" if self.sqlite else "JOIN"

    @property
    def on(self) -> str:
        return "" if self.sqlite else " ON true"


E_COLUMNS = (
    "e.id, e.source, e.calendar_id, e.title, e.start_utc, e.end_utc, e.all_day, e.status, e.transparency, e.mode"
)


async def fetch_rows(session: AsyncSession, sql: str, params: dict[str, Any]) -> list[Any]:
    """Run one SELECT in the session's transaction; on SQLite straight through the driver (reading
    thousands of rows, SQLAlchemy's per-row processing costs more than the query)."""
    if session.get_bind().dialect.name != "sqlite":
        return list((await session.execute(sa.text(sql), params)).all())
    conn = await session.connection()
    driver = (await conn.get_raw_connection()).driver_connection
    return list(await driver.execute_fetchall(sql, params))


def _span_lower(d: _Sql, name: str) -> str:
    """``:name`` minus the longest busy span, in SQL (the stored bound, read by the same statement)."""
    span = "(SELECT COALESCE(MAX(max_duration_seconds), 0) FROM planning_spans)"
    if d.sqlite:
        return f"strftime('%Y-%m-%d %H:%M:%f', :{name}, '-' || {span} || ' seconds')"
    return f"CAST(:{name} AS timestamptz) - make_interval(secs => {span})"


async def busy_in(session: AsyncSession, start: datetime, end: datetime, calendars: Sequence[str] | None) -> list[Busy]:
    """Busy, non-cancelled events overlapping ``[start, end)``, of ``calendars`` or of all (None):
    one statement bounded on the start index. Thousands of rows per proposal: only the columns the
    calendar window index holds (``ix_events_calendar_start``, so no row is read), without titles
    and sources (busy and not cancelled by the WHERE)."""
    d = _Sql(session.get_bind().dialect.name)
    bind = d.t if d.sqlite else (lambda v: v)
    params: dict[str, Any] = {"lo": bind(start), "hi": bind(end)}
    where = [f"e.start_utc >= {_span_lower(d, 'lo')}", "e.start_utc < :hi", "e.end_utc > :lo", BUSY]
    if calendars is not None:
        if not calendars:
            return []
        for i, cal in enumerate(calendars):
            params[f"cal{i}"] = cal
        where.append(f"e.calendar_id IN ({', '.join(f':cal{i}' for i in range(len(calendars)))})")
    sql = f"SELECT e.id, e.calendar_id, e.start_utc, e.end_utc, e.all_day, e.mode FROM events AS e WHERE {' AND '.join(where)}"
    rows = await fetch_rows(session, sql, params)
    if not d.sqlite:
        at = d.parse
        return [Busy(r[0], r[1], at(r[2]), at(r[3]), r[5], bool(r[4])) for r in rows]
    # SQLite's naive UTC text, parsed as d.parse would, each distinct instant once (calendars repeat
    # them: on the hour, back to back); the tuples built directly, without NamedTuple's defaults.
    iso = datetime.fromisoformat
    at = {v: iso(v + "+00:00") for v in {r[2] for r in rows} | {r[3] for r in rows}}
    new = tuple.__new__
    return [new(Busy, (r[0], r[1], at[r[2]], at[r[3]], r[5], r[4] == 1, True, False, "", "")) for r in rows]


def busy_of_tuple(d: _Sql, r: Any) -> Busy:
    # Positional, in Busy's field order: id, calendar_id, start, end, mode, all_day, busy, cancelled,
    # title, source (thousands per proposal; keywords cost more).
    parse = d.parse
    return Busy(r[0], r[2], parse(r[4]), parse(r[5]), r[9], bool(r[6]), r[8] == "busy", r[7] == "cancelled", r[3], r[1])


OVERLAP = "{t}.start_utc < w.hi AND {t}.start_utc >= w.ls AND {t}.end_utc > w.lo"
OVERLAP_M = OVERLAP.replace("w.", "m.")
BUSY = "e.transparency = 'busy' AND e.status <> 'cancelled'"


def reaching_calendars(settings: PlanningSettings) -> list[str]:
    """Calendars whose every event can conflict with a free event (planned or reporting everything)."""
    return sorted(c for c, p in settings.calendars.items() if p.default_mode == "auto-plan" or p.report_all_overlaps)


def _interval_param(d: _Sql, events: list[Busy], span: timedelta) -> str:
    # Only overlapping intervals merge: coarser ranges fetch more than they save (measured).
    merged = merge_intervals([(b.start, b.end) for b in events], 10**9)
    return json.dumps([[d.t(lo), d.t(hi), d.t(lo - span)] for lo, hi in merged])


async def _planned_near(session: AsyncSession, d: _Sql, events: list[Busy], span: timedelta) -> bool:
    """Whether any planned event overlaps the batch's whole time range (one probe of a small index)."""
    lo, hi = min(b.start for b in events), max(b.end for b in events)
    bind = d.t if d.sqlite else (lambda v: v)
    sql = (
        "SELECT 1 FROM planning_planned AS p WHERE p.start_utc < :hi AND p.start_utc >= :ls AND p.end_utc > :lo LIMIT 1"
    )
    return bool(await fetch_rows(session, sql, {"lo": bind(lo), "hi": bind(hi), "ls": bind(lo - span)}))


async def candidates(
    session: AsyncSession, mine: list[Busy], settings: PlanningSettings, span: timedelta
) -> list[Busy]:
    """Stored busy events that may conflict with the batch's events, in one statement: everything
    overlapping the events that reach free ones, and only planned events (or those of calendars
    that plan or report everything) overlapping the free ones. ``pairs_for`` keeps the real overlaps."""
    d = _Sql(session.get_bind().dialect.name)
    roles = Roles(settings)
    reaching: list[Busy] = []
    free: list[Busy] = []
    for b in mine:
        _, planned, reports = roles.of(b)
        (reaching if planned or reports else free).append(b)
    calendars = reaching_calendars(settings) if free else []
    if free and not reaching and not calendars and not await _planned_near(session, d, free, span):
        return []  # free events with no planned event anywhere near: nothing can conflict
    parts: list[str] = []
    params: dict[str, Any] = {}
    ctes: list[str] = []
    if reaching:
        params["wide"] = _interval_param(d, reaching, span)
        ctes.append(d.intervals("wide"))
        parts.append(
            f"SELECT {E_COLUMNS} FROM wide AS w {d.join} events AS e{d.on} WHERE {OVERLAP.format(t='e')} AND {BUSY}"
        )
    if free:
        params["narrow"] = _interval_param(d, free, span)
        ctes.append(d.intervals("narrow"))
        parts.append(
            f"SELECT {E_COLUMNS} FROM narrow AS w {d.join} planning_planned AS p{d.on}"
            f" JOIN events AS e ON e.id = p.event_id WHERE {OVERLAP.format(t='p')} AND {BUSY}"
        )
        if calendars:
            names = []
            for i, cal in enumerate(calendars):
                params[f"rc{i}"] = cal
                names.append(f":rc{i}")
            parts.append(
                f"SELECT {E_COLUMNS} FROM narrow AS w {d.join} events AS e{d.on}"
                f" WHERE e.calendar_id IN ({', '.join(names)}) AND {OVERLAP.format(t='e')} AND {BUSY}"
            )
    rows = await fetch_rows(session, f"WITH {', '.join(ctes)} {' UNION '.join(parts)}", params)
    return [busy_of_tuple(d, r) for r in rows]


async def keep_planned(session: AsyncSession, batch: SinkBatch) -> None:
    """``planning_planned`` follows the batch: events whose own mode is auto-plan and that are busy
    and not cancelled, with their times, calendar and all-day flag."""
    touched = [s.id for s in batch.updated if s.event.mode == "auto-plan" or _was_planned(batch, s.id)]
    touched += [s.id for s in batch.deleted if s.event.mode == "auto-plan"]
    for chunk in _chunks(touched):
        await session.execute(sa.delete(PLANNED).where(PLANNED.c.event_id.in_(chunk)))
    rows = [_planned_row(busy_of(s)) for s in (*batch.added, *batch.updated) if s.event.mode == "auto-plan"]
    rows = [r for r in rows if r is not None]
    if rows:
        await session.execute(sa.insert(PLANNED), rows)


async def replan(session: AsyncSession, ids: Sequence[int], events: list[Busy]) -> None:
    """``planning_planned`` for these events (``ids``) as stored now."""
    for chunk in _chunks(ids):
        await session.execute(sa.delete(PLANNED).where(PLANNED.c.event_id.in_(chunk)))
    rows = [r for r in map(_planned_row, events) if r is not None]
    if rows:
        await session.execute(sa.insert(PLANNED), rows)


def _planned_row(b: Busy) -> dict[str, Any] | None:
    if b.mode != AUTO_PLAN or not b.busy or b.cancelled:
        return None
    return {
        "event_id": b.id,
        "start_utc": b.start,
        "end_utc": b.end,
        "calendar_id": b.calendar_id,
        "all_day": b.all_day,
    }


def _was_planned(batch: SinkBatch, event_id: int) -> bool:
    previous = batch.previous.get(event_id)
    return previous is None or previous.mode == "auto-plan"


def pairs_for(
    mine: list[Busy], others: list[Busy], settings: PlanningSettings, span: timedelta
) -> dict[tuple[int, int], dict[str, Any]]:
    """Every conflicting pair involving an event of ``mine``, keyed ``(lower id, higher id)``
    (each event classified once)."""
    roles = Roles(settings)
    others = sorted(others, key=lambda b: (b.start, b.id))
    starts = [b.start for b in others]
    kinds = [roles.of(o) for o in others]
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for m in mine:
        roles_m = roles.of(m)
        if not roles_m[0]:
            continue
        m_start, m_end, m_id = m.start, m.end, m.id
        for i in range(bisect.bisect_left(starts, m_start - span), bisect.bisect_left(starts, m_end)):
            o = others[i]
            if o.end <= m_start or o.id == m_id:
                continue
            reason = conflict_reason(roles_m, kinds[i])
            if reason is None:
                continue
            a, b = (m, o) if m_id < o.id else (o, m)
            out[(a.id, b.id)] = {
                "event_a": a.id,
                "event_b": b.id,
                "calendar_a": a.calendar_id,
                "calendar_b": b.calendar_id,
                "overlap_start": max(a.start, b.start),
                "overlap_end": min(a.end, b.end),
                "reason": reason,
                "_events": (a, b),
            }
    return out


async def pairs_involving(session: AsyncSession, ids: Sequence[int]) -> dict[tuple[int, int], Any]:
    out: dict[tuple[int, int], Any] = {}
    for chunk in _chunks(ids):
        rows = await session.execute(
            sa.select(
                CONFLICTS.c.event_a,
                CONFLICTS.c.event_b,
                CONFLICTS.c.overlap_start,
                CONFLICTS.c.overlap_end,
                CONFLICTS.c.reason,
            ).where(sa.or_(CONFLICTS.c.event_a.in_(chunk), CONFLICTS.c.event_b.in_(chunk)))
        )
        for r in rows.all():
            out[(r.event_a, r.event_b)] = r
    return out


def conflict_payload(pair: dict[str, Any]) -> dict[str, Any]:
    a, b = pair["_events"]
    return {
        "event_ids": [a.id, b.id],
        "events": [
            {
                "id": e.id,
                "calendar_id": e.calendar_id,
                "source": e.source,
                "title": e.title,
                "start_utc": iso_z(e.start),
                "end_utc": iso_z(e.end),
            }
            for e in (a, b)
        ],
        "overlap": {"start": iso_z(pair["overlap_start"]), "end": iso_z(pair["overlap_end"])},
        "reason": pair["reason"],
    }


def iso_z(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _text_z(value: str) -> str:
    """SQLite's stored UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``) as :func:`iso_z` writes the instant."""
    fraction = value[19:26]
    return f"{value[:10]}T{value[11:19]}{'' if fraction in ('', '.000000') else fraction}Z"


class ConflictSink(Sink):
    """Keeps ``planning_conflicts`` in step with the batch and publishes each new pair once."""

    name = "planning.conflicts"
    order = 300

    async def write(self, batch: SinkBatch, session: AsyncSession, ctx: PluginContext) -> None:
        if not (batch.added or batch.updated or batch.deleted):
            return
        deleted = [d.id for d in batch.deleted]
        for chunk in _chunks(deleted):
            await session.execute(
                sa.delete(CONFLICTS).where(sa.or_(CONFLICTS.c.event_a.in_(chunk), CONFLICTS.c.event_b.in_(chunk)))
            )
        await keep_planned(session, batch)
        changed = [busy_of(s) for s in (*batch.added, *batch.updated)]
        # Only updated events can have pairs already (ids are never reused).
        await upkeep(session, ctx, changed, [s.id for s in batch.updated])


async def upkeep(
    session: AsyncSession, ctx: PluginContext, changed: list[Busy], known: Sequence[int], *, publish: bool = True
) -> None:
    """Bring the pairs of ``changed`` events (as stored now) up to date: ``known`` are those of them
    that may have pairs already; new pairs are announced unless ``publish`` is false."""
    if not changed:
        return
    settings = ctx.section(PlanningSettings)
    before = await pairs_involving(session, known) if known else {}
    roles = Roles(settings)
    mine = [b for b in changed if roles.of(b)[0]]
    after: dict[tuple[int, int], dict[str, Any]] = {}
    if mine:
        longest = max(int((b.end - b.start).total_seconds() + 0.999) for b in mine)
        span = await raise_span(session, longest)
        if NEW_PAIRS_IN_SQL and not known:
            # New events only: the database writes their pairs itself; every one of them is new.
            announce = publish and await announcing(session, ctx)
            written = await insert_new_pairs(session, mine, settings, span, utcnow(), returning=announce)
            if announce and written:
                await _announce(session, ctx, await _written_pairs(session, written))
            return
        after = pairs_for(mine, await candidates(session, mine, settings, span), settings, span)
    gone = [key for key, row in before.items() if key not in after or _differs(row, after[key])]
    for chunk in _chunks(gone):
        await session.execute(
            sa.delete(CONFLICTS).where(sa.tuple_(CONFLICTS.c.event_a, CONFLICTS.c.event_b).in_(list(chunk)))
        )
    fresh = [p for key, p in after.items() if key not in before or _differs(before[key], p)]
    if not fresh:
        return
    await insert_pairs(session, fresh, utcnow())
    new_pairs = [p for key, p in after.items() if key not in before] if publish else []
    if new_pairs and await announcing(session, ctx):
        new_pairs = await unpublished(session, new_pairs)
        if new_pairs:
            await _announce(session, ctx, new_pairs)


async def announcing(session: AsyncSession, ctx: PluginContext) -> bool:
    """Whether new pairs are announced now: only while an outbox is there and someone (an endpoint,
    a delivery target) takes ``event.conflict``. Pairs found while nobody does are not marked
    announced either; a pair that conflicts anew once someone listens is announced then."""
    return ctx.has_service(Outbox) and await ctx.service(Outbox).subscribed(session, CONFLICT_EVENT)


async def _announce(session: AsyncSession, ctx: PluginContext, pairs: list[dict[str, Any]]) -> None:
    """Publish each of ``pairs`` (never announced before) as ``event.conflict`` and mark it announced."""
    now = utcnow()
    await session.execute(
        sa.insert(PUBLISHED),
        [{"event_a": p["event_a"], "event_b": p["event_b"], "published_at": now} for p in pairs],
    )
    await ctx.service(Outbox).enqueue_many(
        session,
        [
            Publication(
                CONFLICT_EVENT,
                conflict_payload(p),
                dedupe_key=f"conflict:{p['event_a']}:{p['event_b']}",
                calendar_id=p["calendar_a"],
            )
            for p in pairs
        ],
    )


async def _written_pairs(session: AsyncSession, written: Sequence[Any]) -> list[dict[str, Any]]:
    """The pairs an insert returned as ``(event_a, event_b, reason code)``, with both events as
    stored and their exact overlap, in pair order."""
    d = _Sql(session.get_bind().dialect.name)
    ids = sorted({r[0] for r in written} | {r[1] for r in written})
    events: dict[int, Busy] = {}
    for chunk in _chunks(ids):
        params = {f"i{n}": v for n, v in enumerate(chunk)}
        rows = await fetch_rows(
            session,
            f"SELECT {E_COLUMNS} FROM events AS e WHERE e.id IN ({', '.join(f':{k}' for k in params)})",
            params,
        )
        for r in rows:
            busy = busy_of_tuple(d, r)
            events[busy.id] = busy
    out = []
    for a_id, b_id, code in sorted(tuple(r) for r in written):
        a, b = events[a_id], events[b_id]
        out.append(
            {
                "event_a": a_id,
                "event_b": b_id,
                "calendar_a": a.calendar_id,
                "calendar_b": b.calendar_id,
                "overlap_start": max(a.start, b.start),
                "overlap_end": min(a.end, b.end),
                "reason": REASONS[code],
                "_events": (a, b),
            }
        )
    return out


_PAIR_COLUMNS = ("event_b", "event_a", "overlap_start", "overlap_end", "reason", "detected_at")
_INSERT_SQLITE = (
    f"INSERT INTO planning_pairs ({', '.join(_PAIR_COLUMNS)}) VALUES ({', '.join('?' * len(_PAIR_COLUMNS))})"
)


def _pair_row(p: dict[str, Any], now: int) -> tuple[int, int, int, int, int, int]:
    return (
        p["event_b"],
        p["event_a"],
        floor_s(p["overlap_start"]),
        ceil_s(p["overlap_end"]),
        REASON_CODES[p["reason"]],
        now,
    )


async def insert_pairs(session: AsyncSession, pairs: list[dict[str, Any]], now: datetime) -> None:
    """Insert new pairs: on SQLite straight through the driver's executemany in the session's
    transaction (a dense full sync writes millions; the ORM's per-row processing dominated)."""
    rows = [_pair_row(p, floor_s(now)) for p in pairs]
    if session.get_bind().dialect.name != "sqlite":
        await session.execute(sa.insert(CONFLICTS), [dict(zip(_PAIR_COLUMNS, r, strict=True)) for r in rows])
        return
    conn = await session.connection()
    driver = (await conn.get_raw_connection()).driver_connection
    await driver.executemany(_INSERT_SQLITE, rows)


async def unpublished(session: AsyncSession, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pairs never announced before (one query per chunk of pairs)."""
    seen: set[tuple[int, int]] = set()
    firsts = sorted({p["event_a"] for p in pairs})
    for chunk in _chunks(firsts):
        rows = await session.execute(
            sa.select(PUBLISHED.c.event_a, PUBLISHED.c.event_b).where(PUBLISHED.c.event_a.in_(chunk))
        )
        seen |= {(a, b) for a, b in rows.all()}
    return [p for p in pairs if (p["event_a"], p["event_b"]) not in seen]


def _differs(row: Any, pair: dict[str, Any]) -> bool:
    return (row.overlap_start, row.overlap_end, row.reason) != (
        floor_s(pair["overlap_start"]),
        ceil_s(pair["overlap_end"]),
        REASON_CODES[pair["reason"]],
    )


# -- reading -----------------------------------------------------------------------------------

A = EVENTS.alias("a")
B = EVENTS.alias("b")


def _columns(alias: Any, prefix: str) -> list[Any]:
    return [
        alias.c[name].label(f"{prefix}_{name}")
        for name in ("id", "calendar_id", "source", "title", "start_utc", "end_utc", "mode", "status", "transparency")
    ]


def _still_conflicting(row: Any) -> tuple[datetime, datetime] | None:
    """The pair's overlap from the events' current state (a local edit may have moved one)."""
    g = row._mapping
    for p in ("a", "b"):
        if g[f"{p}_status"] == "cancelled" or g[f"{p}_transparency"] != "busy":
            return None
    start = max(g["a_start_utc"], g["b_start_utc"])
    end = min(g["a_end_utc"], g["b_end_utc"])
    return (start, end) if start < end else None


_EVENT_FIELDS = ("id", "calendar_id", "source", "title", "start_utc", "end_utc", "mode", "status", "transparency")
_PAGE_COLUMNS = ", ".join(
    ["c.event_a", "c.event_b", "c.reason", "c.overlap_start", "c.detected_at"]
    + [f"{t}.{f}" for t in ("a", "b") for f in _EVENT_FIELDS]
)
_PAGE_HEAD = 5


def _page_sql(calendars: list[str], cursor: bool) -> str:
    span = "(SELECT COALESCE(MAX(max_duration_seconds), 0) FROM planning_spans)"
    where = [f"c.overlap_start >= :lo - {span}", "c.overlap_start < :hi", "c.overlap_end > :lo"]
    if calendars:
        names = ", ".join(f":cal{i}" for i in range(len(calendars)))
        where.append(f"(a.calendar_id IN ({names}) OR b.calendar_id IN ({names}))")
    if cursor:
        where.append(
            "c.overlap_start >= :at AND (c.overlap_start > :at OR c.event_a > :last_a"
            " OR (c.event_a = :last_a AND c.event_b > :last_b))"
        )
    return (
        f"SELECT {_PAGE_COLUMNS} FROM planning_pairs AS c JOIN events AS a ON a.id = c.event_a"
        f" JOIN events AS b ON b.id = c.event_b WHERE {' AND '.join(where)}"
        " ORDER BY c.overlap_start, c.event_a, c.event_b LIMIT :limit"
    )


async def list_conflicts(
    fetch: Callable[[str, dict[str, Any]], Awaitable[list[Any]]],
    dialect: str,
    start: datetime,
    end: datetime,
    calendars: list[str],
    cursor: tuple[int, int, int] | None,
    limit: int,
) -> dict[str, Any]:
    """One page of pairs whose overlap meets ``[start, end)``, keyset by (stored overlap start,
    pair); ``fetch(sql, params)`` runs the one statement. The stored overlap (whole seconds,
    possibly stale) selects the rows; each item's overlap is the events' exact one now."""
    d = _Sql(dialect)
    params: dict[str, Any] = {"lo": floor_s(start), "hi": ceil_s(end), "limit": limit + 1}
    for i, cal in enumerate(calendars):
        params[f"cal{i}"] = cal
    if cursor is not None:
        params.update(at=cursor[0], last_a=cursor[1], last_b=cursor[2])
    rows = await fetch(_page_sql(calendars, cursor is not None), params)
    # Times as the driver gives them: SQLite's fixed-width UTC text compares and formats as text
    # (no parsing: a page is hundreds of rows), PostgreSQL's aware datetimes as they are.
    z: Callable[[Any], str] = _text_z if d.sqlite else iso_z
    window = (d.t(start), d.t(end)) if d.sqlite else (start, end)
    h, n = _PAGE_HEAD, len(_EVENT_FIELDS)  # id, calendar_id, source, title, start, end, mode, status, transparency
    items = []
    for row in rows[:limit]:
        a, b = row[h : h + n], row[h + n :]
        if a[7] == "cancelled" or b[7] == "cancelled" or a[8] != "busy" or b[8] != "busy":
            continue
        lo = a[4] if a[4] > b[4] else b[4]
        hi = a[5] if a[5] < b[5] else b[5]
        if lo >= hi or lo >= window[1] or hi <= window[0]:
            continue  # moved apart since, or only the whole seconds met the window
        items.append(
            {
                "id": f"{row[0]}:{row[1]}",
                "event_ids": [a[0], b[0]],
                "events": [
                    {
                        "id": e[0],
                        "calendar_id": e[1],
                        "source": e[2],
                        "title": e[3],
                        "start_utc": z(e[4]),
                        "end_utc": z(e[5]),
                        "mode": e[6],
                    }
                    for e in (a, b)
                ],
                "overlap": {"start": z(lo), "end": z(hi)},
                "reason": REASONS[row[2]],
                "detected_at": iso_z(from_s(row[4])),
            }
        )
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor("conflicts", [last[3], last[0], last[1]])
    return {"items": items, "next_cursor": next_cursor}


async def conflicting_ids(session: AsyncSession, event_ids: Sequence[int]) -> dict[int, list[int]]:
    """For each of ``event_ids``, the ids of the events it conflicts with now (sorted)."""
    out: dict[int, set[int]] = {i: set() for i in event_ids}
    for chunk in _chunks(list(event_ids)):
        query = (
            sa.select(*_columns(A, "a"), *_columns(B, "b"))
            .select_from(CONFLICTS.join(A, A.c.id == CONFLICTS.c.event_a).join(B, B.c.id == CONFLICTS.c.event_b))
            .where(sa.or_(CONFLICTS.c.event_a.in_(chunk), CONFLICTS.c.event_b.in_(chunk)))
        )
        for row in (await session.execute(query)).all():
            if _still_conflicting(row) is None:
                continue
            if row.a_id in out:
                out[row.a_id].add(row.b_id)
            if row.b_id in out:
                out[row.b_id].add(row.a_id)
    return {k: sorted(v) for k, v in out.items()}


def parse_cursor(raw: str | None) -> tuple[int, int, int] | None:
    if raw is None:
        return None
    at, last_a, last_b = decode_cursor("conflicts", raw, [int, int, int])
    return at, last_a, last_b


class SqlConflictIndex(ConflictIndex):
    """The conflict index the event list asks for ``include=conflicts``."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def conflicting_ids(self, session: AsyncSession, event_ids: Sequence[int]) -> dict[int, list[int]]:
        return await conflicting_ids(session, event_ids)

    async def refresh(self, session: AsyncSession, event_ids: Sequence[int]) -> None:
        """A local edit: run the sink's upkeep for these events as if a batch had updated them."""
        store = self.ctx.service(EventStore)
        changed = [s for s in [await store.get(session, i) for i in event_ids] if s is not None]
        if changed:
            first = changed[0].event
            batch = SinkBatch(first.source, first.calendar_id, updated=changed)
            await ConflictSink().write(batch, session, self.ctx)


# -- pairs of new events, computed by the database -----------------------------------------------


def _calendar_test(
    settings: PlanningSettings, attr: Callable[[CalendarPolicy], bool], column: str, params: dict[str, Any], name: str
) -> str:
    """A calendar policy as a predicate over ``column``: a constant while no calendar departs from
    the defaults, else the departing calendars as an ``IN`` (or ``NOT IN``) list."""
    default = attr(settings.defaults)
    departing = sorted(cal for cal, policy in settings.calendars.items() if attr(policy) != default)
    if not departing:
        return "TRUE" if default else "FALSE"
    names = []
    for i, cal in enumerate(departing):
        params[f"{name}{i}"] = cal
        names.append(f":{name}{i}")
    return f"{column} {'NOT IN' if default else 'IN'} ({', '.join(names)})"


def _insert_select_sql(
    d: _Sql, settings: PlanningSettings, params: dict[str, Any], calendars: list[str], branches: tuple[bool, bool]
) -> str:
    """One INSERT … SELECT writing every pair of the batch's new events (``:m``, materialised once):
    each event meets the stored ones overlapping it through a start index (all events for one that
    plans or reports everything, the planned ones and those of ``calendars`` for a free one), the
    stored event's part comes from its calendar's policy (predicates over its calendar id), and a
    pair found from both of its sides is written once."""
    if d.sqlite:
        m = (
            "SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS lo,"
            " json_extract(value, '$[2]') AS hi, json_extract(value, '$[3]') AS ls, json_extract(value, '$[4]') AS planned,"
            " json_extract(value, '$[5]') AS reports, json_extract(value, '$[6]') AS wide FROM json_each(:m)"
        )
        greatest, least = "MAX", "MIN"
    else:
        m = (
            "SELECT CAST(x->>0 AS bigint) AS id, CAST(x->>1 AS timestamptz) AS lo, CAST(x->>2 AS timestamptz) AS hi,"
            " CAST(x->>3 AS timestamptz) AS ls, CAST(x->>4 AS boolean) AS planned, CAST(x->>5 AS boolean) AS reports,"
            " CAST(x->>6 AS boolean) AS wide FROM jsonb_array_elements(CAST(:m AS jsonb)) AS x"
        )
        greatest, least = "GREATEST", "LEAST"
    mine = "m.id AS mid, m.lo AS mlo, m.hi AS mhi, m.planned AS mplanned, m.reports AS mreports"
    stored = "e.id AS eid, e.calendar_id AS ecal, e.start_utc AS estart, e.end_utc AS eend, e.all_day AS eall_day, e.mode AS emode"
    parts = []
    reaching, free = branches
    if reaching:
        parts.append(
            f"SELECT {mine}, {stored} FROM m {d.join} events AS e{d.on} WHERE m.wide AND {OVERLAP_M.format(t='e')} AND {BUSY}"
        )
    if free:
        # planning_planned holds busy, non-cancelled auto-plan events with what pairing needs.
        parts.append(
            f"SELECT {mine}, p.event_id AS eid, p.calendar_id AS ecal, p.start_utc AS estart, p.end_utc AS eend,"
            " p.all_day AS eall_day, 'auto-plan' AS emode"
            f" FROM m {d.join} planning_planned AS p{d.on} WHERE NOT m.wide AND {OVERLAP_M.format(t='p')}"
        )
        if calendars:
            names = []
            for i, cal in enumerate(calendars):
                params[f"rc{i}"] = cal
                names.append(f":rc{i}")
            parts.append(
                f"SELECT {mine}, {stored} FROM m {d.join} events AS e{d.on} WHERE NOT m.wide"
                f" AND e.calendar_id IN ({', '.join(names)}) AND {OVERLAP_M.format(t='e')} AND {BUSY}"
            )

    def test(attr: Callable[[CalendarPolicy], bool], name: str) -> str:
        return _calendar_test(settings, attr, "u.ecal", params, name)

    counts = test(lambda p: p.counts_for_conflicts, "pc")
    all_day = test(lambda p: p.all_day_blocks, "pa")
    plans = test(lambda p: p.default_mode == AUTO_PLAN, "pp")
    reports = test(lambda p: p.report_all_overlaps, "pr")
    reason = (
        f"CASE WHEN u.mplanned OR u.emode = 'auto-plan' OR (u.emode IS NULL AND {plans})"
        f" THEN {REASON_CODES['auto-plan']} WHEN u.mreports OR {reports} THEN {REASON_CODES['all-overlaps']} END"
    )
    low = "u.mid < u.eid"
    pairs = (
        f"SELECT CASE WHEN {low} THEN u.mid ELSE u.eid END AS a, CASE WHEN {low} THEN u.eid ELSE u.mid END AS b,"
        f" {greatest}(u.mlo, u.estart) AS os, {least}(u.mhi, u.eend) AS oe, {reason} AS reason FROM u"
        f" WHERE u.eid <> u.mid AND {counts} AND u.eend > u.estart AND (NOT u.eall_day OR {all_day})"
    )
    now = ":now" if d.sqlite else "CAST(:now AS bigint)"
    return (
        f"WITH m AS MATERIALIZED ({m}), u AS ({' UNION ALL '.join(parts)}), r AS ({pairs})"
        " INSERT INTO planning_pairs (event_b, event_a, overlap_start, overlap_end, reason, detected_at)"
        f" SELECT DISTINCT r.b, r.a, {d.seconds('r.os')}, {d.seconds('r.oe', up=True)}, r.reason, {now}"
        " FROM r WHERE r.reason IS NOT NULL"
    )


async def insert_new_pairs(
    session: AsyncSession,
    mine: list[Busy],
    settings: PlanningSettings,
    span: timedelta,
    now: datetime,
    *,
    returning: bool = False,
) -> list[Any]:
    """Every pair of ``mine`` (new events that block: no pair of theirs is stored yet), written by
    one statement without reading the candidates back; when ``returning``, the new pairs as
    ``(event_a, event_b, reason code)``."""
    d = _Sql(session.get_bind().dialect.name)
    roles = Roles(settings)
    rows: list[list[Any]] = []
    free: list[Busy] = []
    for b in mine:
        _, planned, reports = roles.of(b)
        wide = planned or reports
        rows.append([b.id, d.t(b.start), d.t(b.end), d.t(b.start - span), planned, reports, wide])
        if not wide:
            free.append(b)
    calendars = reaching_calendars(settings) if free else []
    reaching = len(free) < len(mine)
    if free and not reaching and not calendars and not await _planned_near(session, d, free, span):
        return []
    params: dict[str, Any] = {"m": json.dumps(rows), "now": floor_s(now)}
    sql = _insert_select_sql(d, settings, params, calendars, (reaching, bool(free)))
    if returning:
        return await fetch_rows(session, f"{sql} RETURNING event_a, event_b, reason", params)
    if d.sqlite:
        conn = await session.connection()
        driver = (await conn.get_raw_connection()).driver_connection
        await driver.execute(sql, params)
    else:
        await session.execute(sa.text(sql), params)
    return []
