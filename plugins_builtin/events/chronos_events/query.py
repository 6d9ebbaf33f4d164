"""The event list query: windows, direction, text, tags, keyset pages, analytics.

The SQL is written by hand (one statement per page) so that every filter maps
onto an index:

* overlap ``start_utc < :to AND end_utc > :from`` is made sargable with
  ``start_utc >= :from - max_duration``, where ``max_duration`` is the longest
  duration stored in the calendars asked for (``events_spans``, a scalar
  subquery evaluated once per statement);
* one calendar uses ``ix_events_calendar_start (calendar_id, start_utc, id)``,
  all calendars ``ix_events_start (start_utc, id)``;
* the keyset cursor continues after ``(start_utc, id)`` of the last item.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import TextClause, text

from chronos.plugin import InvalidInput, MalformedInput, decode_cursor, encode_cursor

from chronos_events.search import PG_TSVECTOR, SQLITE_FTS_TABLE, fts5_match, parse_query, pg_tsquery

Direction = Literal["future", "past", "all"]

COLUMNS = (
    "id, source, calendar_id, uid, recurrence_id, title, description, location, start_utc, end_utc,"
    " all_day, start_date, end_date, timezone, status, transparency, mode, tags, sub_tasks, all_done,"
    " metadata, content_hash, created_at, updated_at"
)
#: The names in :data:`COLUMNS`, in order.
ITEM_COLUMNS = tuple(c.strip() for c in COLUMNS.split(","))


def _sqlite_iso(column: str) -> str:
    """SQL for :func:`iso_z` on SQLite's fixed-width timestamp text."""
    return (
        f"CASE WHEN substr({column}, 20) = '.000000' THEN substr({column}, 1, 10) || 'T' || substr({column}, 12, 8) || 'Z'"
        f" ELSE substr({column}, 1, 10) || 'T' || rtrim(substr({column}, 12), '0') || 'Z' END"
    )


# The API's item object built by SQLite itself (same keys, order and values as
# row_to_item), so a page needs no per-row Python work: the rows are joined.
SQLITE_ITEM_JSON = (
    "json_object('id', id, 'source', source, 'calendar_id', calendar_id, 'uid', uid, 'recurrence_id', recurrence_id,"
    " 'title', title, 'description', description, 'location', location,"
    f" 'start_utc', {_sqlite_iso('start_utc')}, 'end_utc', {_sqlite_iso('end_utc')},"
    " 'all_day', json(CASE WHEN all_day THEN 'true' ELSE 'false' END),"
    " 'start_date', start_date, 'end_date', end_date, 'timezone', timezone, 'status', status,"
    " 'transparency', transparency, 'mode', mode, 'tags', json(tags), 'sub_tasks', json(sub_tasks),"
    " 'all_done', json(CASE WHEN all_done THEN 'true' ELSE 'false' END), 'metadata', json(metadata),"
    f" 'content_hash', content_hash, 'created_at', {_sqlite_iso('created_at')},"
    f" 'updated_at', {_sqlite_iso('updated_at')})"
)
CURSOR_KIND = "events"
WINDOW_FIRST_MAX_SPAN = timedelta(days=92)


def sqlite_time(value: datetime) -> str:
    """The text form SQLAlchemy stores UTC timestamps in on SQLite (sortable)."""
    # isoformat, not strftime: strftime("%Y") writes year 999 as "999", which sorts wrong.
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def iso_z(value: Any) -> str | None:
    """A stored timestamp (SQLite text or an aware datetime) as ISO 8601 UTC with ``Z``."""
    if value is None:
        return None
    if value.__class__ is str:
        # "YYYY-MM-DD HH:MM:SS.ffffff" -> "YYYY-MM-DDTHH:MM:SS[.ffffff]Z"
        if len(value) == 26:  # the fixed width SQLAlchemy writes: slice, do not parse
            if value.endswith(".000000"):
                return value[:10] + "T" + value[11:19] + "Z"
            return value[:10] + "T" + value[11:26].rstrip("0") + "Z"
        head, _, frac = value.partition(".")
        frac = frac.rstrip("0")
        return head.replace(" ", "T") + ("." + frac if frac else "") + "Z"
    value = value.astimezone(UTC)
    text = value.isoformat("T", "seconds")[:19]  # a four-digit year, unlike strftime's %Y
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _json(value: Any) -> Any:
    if value.__class__ is str:
        # SQLite hands JSON columns back as text; most are empty.
        if value == "[]":
            return []
        if value == "{}":
            return {}
        return json.loads(value)
    return value


def _date(value: Any) -> str | None:
    if value is None or value.__class__ is str:
        return value
    return value.isoformat()


def row_to_item(row: Any) -> dict[str, Any]:
    """One result row (in :data:`COLUMNS` order) as the API's JSON object."""
    (
        id_,
        source,
        calendar_id,
        uid,
        recurrence_id,
        title,
        description,
        location,
        start,
        end,
        all_day,
        start_date,
        end_date,
        timezone,
        status,
        transparency,
        mode,
        tags,
        sub_tasks,
        all_done,
        metadata,
        content_hash,
        created,
        updated,
    ) = row
    return {
        "id": id_,
        "source": source,
        "calendar_id": calendar_id,
        "uid": uid,
        "recurrence_id": recurrence_id,
        "title": title,
        "description": description,
        "location": location,
        "start_utc": iso_z(start),
        "end_utc": iso_z(end),
        "all_day": bool(all_day),
        "start_date": _date(start_date),
        "end_date": _date(end_date),
        "timezone": timezone,
        "status": status,
        "transparency": transparency,
        "mode": mode,
        "tags": _json(tags),
        "sub_tasks": _json(sub_tasks),
        "all_done": bool(all_done),
        "metadata": _json(metadata),
        "content_hash": content_hash,
        "created_at": iso_z(created),
        "updated_at": iso_z(updated),
    }


def stored_item(row: Any) -> dict[str, Any]:
    """A row from ``select(events)`` as the API's JSON object."""
    m = row._mapping
    return row_to_item([m[c] for c in ITEM_COLUMNS])


@dataclass
class EventQuery:
    """Validated parameters of ``GET /api/v1/events``."""

    start: datetime | None = None  # ``from``
    end: datetime | None = None  # ``to``
    calendars: list[str] = field(default_factory=list)
    direction: Direction | None = None
    text: str | None = None
    include_completed: bool = True
    tags: list[str] = field(default_factory=list)
    limit: int = 50
    cursor: str | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Close an open side of the window this far from the other (analytics, text search).
    max_window: timedelta | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise InvalidInput(
                "`from` is after `to`",
                type="validation",
                errors=[
                    {
                        "pointer": "/query/from",
                        "location": "query",
                        "detail": "must not be after `to`",
                        "type": "value_error",
                    }
                ],
            )
        if self.direction is None:
            self.direction = "all" if (self.start is not None or self.end is not None) else "future"
        self.calendars = sorted(set(self.calendars))
        self.tags = sorted(set(self.tags))
        self.text = (self.text or "").strip() or None

    # -- bounds ----------------------------------------------------------------

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """(lower, upper): events must end after ``lower`` and start before ``upper``.

        * ``all``: the window ``[from, to)``, either side open.
        * ``future``: ``lower`` is ``from`` or now; ``upper`` is ``to``.
        * ``past``: ``upper`` is ``to``, else ``from``, else now (events that had
          started by then, newest first); ``lower`` is ``from`` only when both
          are given.
        """
        lower, upper = self._open_bounds()
        span = self.max_window
        if span is not None:
            if lower is None and upper is None:
                lower = self.now
            if upper is None:
                assert lower is not None
                upper = _shift(lower, span)
            elif lower is None:
                lower = _shift(upper, -span)
        return lower, upper

    def _open_bounds(self) -> tuple[datetime | None, datetime | None]:
        if self.direction == "future":
            return (self.start or self.now), self.end
        if self.direction == "past":
            upper = self.end or self.start or self.now
            lower = self.start if (self.start is not None and self.end is not None) else None
            return lower, upper
        return self.start, self.end

    def window_too_long(self) -> bool:
        """Both sides given (by the caller) further apart than ``max_window``."""
        lower, upper = self._open_bounds()
        return (
            self.max_window is not None and lower is not None and upper is not None and upper - lower > self.max_window
        )

    @property
    def descending(self) -> bool:
        return self.direction == "past"

    def fingerprint(self) -> str:
        """Identifies the filter a cursor was issued for (not the page position)."""
        payload = json.dumps(
            [
                self.start.isoformat() if self.start else None,
                self.end.isoformat() if self.end else None,
                self.calendars,
                self.direction,
                self.text,
                self.include_completed,
                self.tags,
            ],
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def decoded_cursor(self) -> tuple[datetime, int] | None:
        if not self.cursor:
            return None
        direction, start, event_id, fingerprint = decode_cursor(CURSOR_KIND, self.cursor, [str, str, int, str])
        if direction != self.direction or fingerprint != self.fingerprint():
            raise MalformedInput(
                "The cursor belongs to a query with other filters; start again without it",
                type="invalid-cursor",
            )
        try:
            at = datetime.fromisoformat(start.replace("Z", "+00:00"))
            if at.tzinfo is None:
                raise ValueError("naive")
            at = at.astimezone(UTC)  # OverflowError past the year 9999 (or before 1) in UTC
        except (ValueError, OverflowError):
            raise MalformedInput("The cursor is invalid; start again without it", type="invalid-cursor") from None
        return at, event_id

    def next_cursor(self, last: dict[str, Any]) -> str:
        return encode_cursor(CURSOR_KIND, [self.direction, last["start_utc"], last["id"], self.fingerprint()])


def _shift(at: datetime, by: timedelta) -> datetime:
    """``at + by`` kept inside the years 1 to 9999."""
    try:
        return at + by
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC) if by > timedelta(0) else datetime.min.replace(tzinfo=UTC)


@dataclass
class Compiled:
    sql: str
    params: dict[str, Any]


class QueryBuilder:
    """Builds the SQL for one dialect (``sqlite`` or ``postgresql``)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def _t(self, value: datetime) -> Any:
        return sqlite_time(value) if self.dialect == "sqlite" else value

    def _max_duration(self, q: EventQuery, params: dict[str, Any]) -> str:
        if q.calendars:
            names = []
            for i, cal in enumerate(q.calendars):
                params[f"cal{i}"] = cal
                names.append(f":cal{i}")
            where = f" WHERE calendar_id IN ({', '.join(names)})"
        else:
            where = ""
        return f"(SELECT COALESCE(MAX(max_duration_seconds), 0) FROM events_spans{where})"

    def _lower_bound(self, bound_param: str, maxdur_sql: str) -> str:
        """``start_utc >= :bound - max_duration`` in the dialect's arithmetic."""
        if self.dialect == "sqlite":
            # strftime(...'%f') keeps milliseconds; the string compares lower or
            # equal to the stored microsecond form, so the bound is never too tight.
            return f"start_utc >= strftime('%Y-%m-%d %H:%M:%f', :{bound_param}, '-' || {maxdur_sql} || ' seconds')"
        return f"start_utc >= CAST(:{bound_param} AS timestamptz) - make_interval(secs => {maxdur_sql})"

    def where(self, q: EventQuery, params: dict[str, Any], *, text_terms: Any = None) -> list[str] | None:
        """WHERE clauses for the filters (without the cursor); None means "matches nothing"."""
        clauses: list[str] = []
        if q.calendars:
            if len(q.calendars) == 1:
                params["cal0"] = q.calendars[0]
                clauses.append("calendar_id = :cal0")
            else:
                clauses.append("calendar_id IN (" + ", ".join(f":cal{i}" for i in range(len(q.calendars))) + ")")
                for i, cal in enumerate(q.calendars):
                    params[f"cal{i}"] = cal
        lower, upper = q.bounds()
        if lower is not None:
            params["lower"] = self._t(lower)
            clauses.append("end_utc > :lower")
            clauses.append(self._lower_bound("lower", self._max_duration(q, params)))
        if upper is not None:
            params["upper"] = self._t(upper)
            clauses.append("start_utc < :upper")
        if not q.include_completed:
            clauses.append("all_done = FALSE")
        for i, tag in enumerate(q.tags):
            if self.dialect == "sqlite":
                params[f"tag{i}"] = tag
                clauses.append(f"EXISTS (SELECT 1 FROM json_each(events.tags) WHERE json_each.value = :tag{i})")
            else:
                params[f"tag{i}"] = json.dumps([tag])
                clauses.append(f"tags @> CAST(:tag{i} AS jsonb)")
        if q.text:
            terms = parse_query(q.text)
            if not terms:
                return None
            if self.dialect == "sqlite":
                params["fts"] = fts5_match(terms)
                # In a bounded window, walk the start index and test each entry's id
                # against the matches (built once): a common word then costs one pass
                # over the window instead of a row lookup per match (10x at 1M
                # events). Without a window, the matches drive the query.
                lower, upper = q.bounds()
                bounded = lower is not None and upper is not None and upper - lower <= WINDOW_FIRST_MAX_SPAN
                column = "+id" if bounded else "id"
                clauses.append(
                    f"{column} IN (SELECT rowid FROM {SQLITE_FTS_TABLE} WHERE {SQLITE_FTS_TABLE} MATCH :fts)"
                )
            else:
                params["fts"] = pg_tsquery(terms)
                clauses.append(f"{PG_TSVECTOR} @@ to_tsquery('simple', :fts)")
        return clauses

    def page(self, q: EventQuery, *, json_items: bool = False) -> Compiled | None:
        """The page's SELECT; ``json_items`` (SQLite) returns ``(id, start_utc, item JSON)`` rows."""
        params: dict[str, Any] = {}
        clauses = self.where(q, params)
        if clauses is None:
            return None
        position = q.decoded_cursor()
        if position is not None:
            params["cs"] = self._t(position[0])
            params["ci"] = position[1]
            if q.descending:
                clauses.append("start_utc <= :cs AND (start_utc < :cs OR id < :ci)")
            else:
                clauses.append("start_utc >= :cs AND (start_utc > :cs OR id > :ci)")
        order = "start_utc DESC, id DESC" if q.descending else "start_utc, id"
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        params["limit"] = q.limit + 1
        columns = f"id, start_utc, {SQLITE_ITEM_JSON}" if json_items else COLUMNS
        return Compiled(f"SELECT {columns} FROM events{where} ORDER BY {order} LIMIT :limit", params)

    def analytics(self, q: EventQuery) -> dict[str, Compiled] | None:
        params: dict[str, Any] = {}
        clauses = self.where(q, params)
        if clauses is None:
            return None
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        day = (
            "substr(start_utc, 1, 10)"
            if self.dialect == "sqlite"
            else "to_char(start_utc AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        )
        if self.dialect == "sqlite":
            tag_sql = f"SELECT j.value, COUNT(*) FROM events, json_each(events.tags) AS j{where} GROUP BY j.value"
        else:
            tag_sql = (
                f"SELECT j.value, COUNT(*) FROM events, jsonb_array_elements_text(events.tags) AS j(value){where}"
                " GROUP BY j.value"
            )
        busy_where = where + (" AND " if where else " WHERE ") + "transparency = 'busy' AND status <> 'cancelled'"
        return {
            "busy": Compiled(self._busy_sql(busy_where, q, params), params),
            "calendar": Compiled(f"SELECT calendar_id, COUNT(*) FROM events{where} GROUP BY calendar_id", params),
            "day": Compiled(f"SELECT {day} AS d, COUNT(*) FROM events{where} GROUP BY d", params),
            "tag": Compiled(tag_sql, params),
        }

    def _busy_sql(self, busy_where: str, q: EventQuery, params: dict[str, Any]) -> str:
        """Minutes covered by the union of the busy intervals, clipped to the window, in one
        statement: the intervals merge into islands (window functions) and their lengths add up."""
        lower, upper = q.bounds()
        if self.dialect == "sqlite":
            s_expr = "MAX(start_utc, :lower)" if lower is not None else "start_utc"
            e_expr = "MIN(end_utc, :upper)" if upper is not None else "end_utc"
            minutes = "(julianday(e) - julianday(s)) * 1440.0"
        else:
            s_expr = "GREATEST(start_utc, CAST(:lower AS timestamptz))" if lower is not None else "start_utc"
            e_expr = "LEAST(end_utc, CAST(:upper AS timestamptz))" if upper is not None else "end_utc"
            minutes = "EXTRACT(EPOCH FROM (e - s)) / 60.0"
        return (
            f"WITH b AS (SELECT {s_expr} AS s, {e_expr} AS e FROM events{busy_where}),"
            " o AS (SELECT s, e, MAX(e) OVER (ORDER BY s, e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS pe"
            " FROM b WHERE e > s),"
            " g AS (SELECT s, e, SUM(CASE WHEN pe IS NULL OR s > pe THEN 1 ELSE 0 END)"
            " OVER (ORDER BY s, e ROWS UNBOUNDED PRECEDING) AS grp FROM o),"
            " i AS (SELECT MIN(s) AS s, MAX(e) AS e FROM g GROUP BY grp)"
            f" SELECT COALESCE(SUM({minutes}), 0) FROM i"
        )


@lru_cache(maxsize=512)
def sql_text(sql: str) -> TextClause:
    """A cached ``text()`` construct: the statement shapes repeat, so parse each once."""
    return text(sql)


async def fetch_all(session: Any, sql: str, params: dict[str, Any]) -> list[Any]:
    """Run a read query in the session's transaction and return every row.

    On SQLite the statement goes to the aiosqlite connection in one call
    (``execute_fetchall``: one hop to its thread) instead of the four hops
    SQLAlchemy's cursor emulation makes (cursor, execute, fetch, close); on a
    busy two-core machine that was most of a small window query's time. The
    SQL is ours and uses sqlite3's native ``:name`` parameters.
    """
    if session.get_bind().dialect.name == "sqlite":
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        return list(await raw.driver_connection.execute_fetchall(sql, params))
    return list((await session.execute(sql_text(sql), params)).all())


def over_budget(exc: BaseException) -> bool:
    """Whether ``exc`` is a statement stopped by :func:`statement_budget` (or the progress handler)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) == "57014" or getattr(orig, "pgcode", None) == "57014":
        return True
    message = str(exc).lower()
    return "interrupted" in message or "statement timeout" in message


@asynccontextmanager
async def statement_budget(session: Any, budget_ms: int) -> AsyncIterator[None]:
    """Statements of ``session`` inside stop after ``budget_ms``: ``SET LOCAL
    statement_timeout`` on PostgreSQL (ends with the transaction), a progress
    handler on SQLite's connection (removed on the way out)."""
    if session.get_bind().dialect.name != "sqlite":
        await session.execute(text(f"SET LOCAL statement_timeout = {int(budget_ms)}"))
        yield
        return
    conn = await session.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    async with sqlite_budget(raw, budget_ms):
        yield


@asynccontextmanager
async def sqlite_budget(driver: Any, budget_ms: int) -> AsyncIterator[None]:
    """A progress handler on an aiosqlite connection that interrupts statements after ``budget_ms``."""
    deadline = time.monotonic() + budget_ms / 1000

    def stop() -> int:
        return 1 if time.monotonic() > deadline else 0

    await driver.set_progress_handler(stop, 1000)
    try:
        yield
    finally:
        await driver.set_progress_handler(None, 0)


class InlineReader:
    """Short SQLite reads run right on the event loop, with a time budget.

    A thread hop per query (aiosqlite) costs little alone, but under
    concurrency every hop waits for the GIL behind other threads, which
    multiplied a 0.2 ms window query into milliseconds. A page of a window
    query is short, so it runs here, synchronously, on a per-process
    read-only connection; a progress handler interrupts it once it has used
    ``budget_ms`` of CPU (a common word in a large text search, a huge window)
    or ten times that in wall time (cold disk), and the caller re-runs it in
    the thread pool instead, so the loop is never blocked for long.
    """

    def __init__(self, path: str, budget_ms: float = 8.0) -> None:
        import sqlite3

        self._sqlite3 = sqlite3
        self.budget = budget_ms / 1000
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA query_only = ON")
        self._cpu_deadline = self._wall_deadline = 0.0
        self.conn.set_progress_handler(self._over_budget, 20_000)  # VM steps between checks
        self.fallbacks = 0
        self.last_error: str | None = None

    def _over_budget(self) -> int:
        # CPU time of this thread, so that being preempted on a busy machine does
        # not count; wall time with a wide margin catches slow disk reads.
        if time.thread_time() > self._cpu_deadline or time.perf_counter() > self._wall_deadline:
            return 1
        return 0

    def fetch(self, sql: str, params: dict[str, Any]) -> list[Any] | None:
        """The rows, or None when the budget ran out (or the file is busy/unreadable)."""
        self._cpu_deadline = time.thread_time() + self.budget
        self._wall_deadline = time.perf_counter() + 10 * self.budget
        try:
            return self.conn.execute(sql, params).fetchall()
        except self._sqlite3.OperationalError as exc:
            self.fallbacks += 1
            self.last_error = str(exc)
            return None

    def close(self) -> None:
        self.conn.close()


async def list_page_sqlite(
    engine: Any, q: EventQuery, inline: InlineReader | None = None, budget_ms: int | None = None
) -> bytes:
    """``GET /api/v1/events`` without analytics on SQLite: the response body, as bytes.

    SQLite builds each item's JSON (:data:`SQLITE_ITEM_JSON`); the page runs
    on the :class:`InlineReader` or, past its budget, on one pooled aiosqlite
    connection in one hop. No ORM session and no explicit transaction: a
    single SELECT reads one consistent WAL snapshot by itself.
    """
    page = QueryBuilder("sqlite").page(q, json_items=True)
    if page is None:
        return b'{"items":[],"next_cursor":null}'
    # Full-text pages usually outlive the budget: they go straight to the thread.
    rows = inline.fetch(page.sql, page.params) if inline is not None and not q.text else None
    if rows is None:
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            if budget_ms is None:
                rows = list(await driver.execute_fetchall(page.sql, page.params))
            else:
                async with sqlite_budget(driver, budget_ms):
                    rows = list(await driver.execute_fetchall(page.sql, page.params))
    next_cursor = "null"
    if len(rows) > q.limit:
        last = rows[q.limit - 1]
        next_cursor = json.dumps(q.next_cursor({"start_utc": iso_z(last[1]), "id": last[0]}))
    items = ",".join([r[2] for r in rows[: q.limit]])
    return f'{{"items":[{items}],"next_cursor":{next_cursor}}}'.encode()


async def list_events(
    session: Any, dialect: str, q: EventQuery, *, analytics: bool = False, provider: Any = None
) -> dict[str, Any]:
    """The body of ``GET /api/v1/events``: one page, the next cursor, optional analytics
    (from ``provider``, an ``EventAnalytics`` service, when one is registered)."""
    builder = QueryBuilder(dialect)
    body: dict[str, Any] = {"items": [], "next_cursor": None}
    page = builder.page(q)
    if page is not None:
        rows = await fetch_all(session, page.sql, page.params)
        items = [row_to_item(r) for r in rows[: q.limit]]
        body["items"] = items
        if len(rows) > q.limit:
            body["next_cursor"] = q.next_cursor(items[-1])
    if analytics:
        body["analytics"] = await compute_analytics(session, builder, q, provider)
    return body


async def compute_analytics(session: Any, builder: QueryBuilder, q: EventQuery, provider: Any = None) -> dict[str, Any]:
    """Counts per calendar, per UTC start day and per tag, and busy minutes, over every match.

    With the analytics plugin's ``EventAnalytics`` (``provider``) the numbers come from its code,
    the same as ``/api/v1/analytics``; the queries below serve installs without it."""
    out: dict[str, Any] = {"total": 0, "per_calendar": {}, "per_day": {}, "per_tag": {}, "busy_minutes": 0.0}
    if provider is not None:
        params: dict[str, Any] = {}
        clauses = builder.where(q, params)
        lower, upper = q.bounds()
        if clauses is not None:
            out.update(await provider.projection(session, " AND ".join(clauses), params, lower, upper))
        out["window"] = {"from": iso_z(lower), "to": iso_z(upper)}
        return out
    compiled = builder.analytics(q)
    if compiled is None:
        return out

    async def run(name: str) -> list[Any]:
        return await fetch_all(session, compiled[name].sql, compiled[name].params)

    per_cal = {c: n for c, n in await run("calendar")}
    out["per_calendar"] = dict(sorted(per_cal.items()))
    out["total"] = sum(per_cal.values())
    out["per_day"] = dict(sorted((day_key(d), n) for d, n in await run("day")))
    out["per_tag"] = dict(sorted((t, n) for t, n in await run("tag")))
    lower, upper = q.bounds()
    out["window"] = {"from": iso_z(lower), "to": iso_z(upper)}
    (busy,) = (await run("busy"))[0]
    out["busy_minutes"] = round(float(busy or 0), 2)
    return out


def day_key(value: Any) -> str:
    return value if isinstance(value, str) else value.isoformat() if isinstance(value, date) else str(value)
