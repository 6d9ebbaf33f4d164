"""The :class:`EventStore` implementation: bulk upserts keyed by the source key.

``apply`` costs a fixed number of statements per batch and calendar, whatever
its size: one SELECT of the existing keys and hashes (``uid IN (...)`` per 400
keys), one of the tombstones, full rows only for what changed, one bulk INSERT
(SQLite: a driver ``executemany`` plus a primary-key range read of the new
ids; PostgreSQL: multi-row INSERT … RETURNING), one executemany UPDATE, one
DELETE and one upsert of the calendars' longest durations. Equal source hashes
are skipped without a write.

Local edits (``PATCH``, :meth:`update_metadata`) are kept in
``local_overrides`` and re-applied when the source delivers a new version, so
a re-sync never reverts them; ``source_hash`` (what the pipeline delivered
last) is what a sync compares against.

What the enrichers derive from the text (tags, sub-tasks, hints) is not an
override: when a local edit or a re-sync under one changes title, description
or location, the kernel's :meth:`EventIntake.rederive` runs the enrichers on
the result, so derived fields always follow the text the event shows.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, literal, null, select, text, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    ApplyResult,
    CanonicalEvent,
    EventIntake,
    EventKey,
    EventStore,
    StoredEvent,
    one_of,
    utcnow,
)

from chronos_events.models import Event, EventTombstone

T = Event.__table__
TOMB = EventTombstone.__table__
CHUNK = 400  # keys per IN (...) list: well below every driver's parameter limit

PATCHABLE = (
    "title",
    "description",
    "location",
    "start_utc",
    "end_utc",
    "all_day",
    "start_date",
    "end_date",
    "timezone",
    "status",
    "transparency",
    "mode",
    "tags",
    "sub_tasks",
)
#: The fields enrichers read: changing one of them re-derives tags, sub-tasks and hints.
TEXT_FIELDS = ("title", "description", "location")
#: Fields that are results of the enrichers rather than input to them.
DERIVED_FIELDS = ("tags", "sub_tasks")


class UnknownSubTask(LookupError):
    """A done flag names a sub-task the (edited) event does not have."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"the event has no sub-task {task_id!r}")
        self.task_id = task_id


NARROW = (T.c.id, T.c.source, T.c.calendar_id, T.c.uid, T.c.recurrence_id, T.c.source_hash, T.c.local_overrides)
TOMB_KEY = (TOMB.c.source, TOMB.c.calendar_id, TOMB.c.uid, TOMB.c.recurrence_id)
KEY_COLUMNS = ("source", "calendar_id", "uid", "recurrence_id")
INSERT_COLUMNS = tuple(c.name for c in T.columns if c.name != "id")
# local_overrides change only through patch(); a sync keeps them.
UPDATE_COLUMNS = tuple(c for c in INSERT_COLUMNS if c not in KEY_COLUMNS and c not in ("created_at", "local_overrides"))
SQLITE_INSERT = f"INSERT INTO events ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join('?' for _ in INSERT_COLUMNS)})"
SQLITE_UPDATE = f"UPDATE events SET {', '.join(f'{c} = ?' for c in UPDATE_COLUMNS)} WHERE id = ?"
_JSON_COLUMNS = {"tags", "sub_tasks", "metadata", "local_overrides"}


def _sqlite_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is UTC:  # the usual case: "YYYY-MM-DD HH:MM:SS.ffffff" without the "+00:00"
        return value.isoformat(" ", "microseconds")[:26]
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_json(value: Any) -> str | None:
    if value is None:
        return None
    if not value:
        return "[]" if isinstance(value, list) else "{}"
    return json.dumps(value)


def _sqlite_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _same(value: Any) -> Any:
    return value


def _converter(column: str) -> Any:
    """How a column's value is stored on SQLite, as SQLAlchemy would store it."""
    if column in _JSON_COLUMNS:
        return _sqlite_json
    kind = type(T.c[column].type).__name__
    if column in ("start_utc", "end_utc", "created_at", "updated_at"):
        return _sqlite_time
    if kind == "Date":
        return _sqlite_date
    if kind == "Boolean":
        return int
    return _same


_CONVERT = {c: _converter(c) for c in INSERT_COLUMNS}


def _sqlite_row(values: dict[str, Any], columns: tuple[str, ...] = INSERT_COLUMNS) -> tuple[Any, ...]:
    return tuple([_CONVERT[c](values[c]) for c in columns])


def _sqlite_new_row(e: CanonicalEvent, content_hash: str, stamp: str | None) -> tuple[Any, ...]:
    """A new event's SQLite row in ``INSERT_COLUMNS`` order, straight from the event: the same
    values as ``_sqlite_row`` of its column dict, without building the dict (a full sync's hot path)."""
    return (
        e.source,
        e.calendar_id,
        e.uid,
        e.recurrence_id,
        e.title,
        e.description,
        e.location,
        _sqlite_time(e.start_utc),
        _sqlite_time(e.end_utc),
        duration_seconds(e),
        int(e.all_day),
        _sqlite_date(e.start_date),
        _sqlite_date(e.end_date),
        e.timezone,
        e.status,
        e.transparency,
        e.mode,
        _sqlite_json(list(e.tags)),
        _sqlite_json([t.model_dump() for t in e.sub_tasks]),
        int(e.all_done),
        _sqlite_json(dict(e.metadata)),
        content_hash,  # content_hash and source_hash: equal for a new row
        content_hash,
        None,  # local_overrides
        stamp,  # created_at and updated_at
        stamp,
    )


async def _driver(session: AsyncSession) -> Any:
    """The aiosqlite connection under ``session`` (inside its current transaction)."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


def duration_seconds(event: CanonicalEvent) -> int:
    return max(0, math.ceil((event.end_utc - event.start_utc).total_seconds()))


def row_values(event: CanonicalEvent) -> dict[str, Any]:
    """Column values of ``event`` (without hashes, overrides and timestamps)."""
    return {
        "source": event.source,
        "calendar_id": event.calendar_id,
        "uid": event.uid,
        "recurrence_id": event.recurrence_id,
        "title": event.title,
        "description": event.description,
        "location": event.location,
        "start_utc": event.start_utc,
        "end_utc": event.end_utc,
        "duration_seconds": duration_seconds(event),
        "all_day": event.all_day,
        "start_date": event.start_date,
        "end_date": event.end_date,
        "timezone": event.timezone,
        "status": event.status,
        "transparency": event.transparency,
        "mode": event.mode,
        "tags": list(event.tags),
        "sub_tasks": [t.model_dump() for t in event.sub_tasks],
        "all_done": event.all_done,
        "metadata": dict(event.metadata),
    }


def row_to_event(row: Any) -> CanonicalEvent:
    m = row._mapping
    return CanonicalEvent(
        source=m["source"],
        calendar_id=m["calendar_id"],
        uid=m["uid"],
        recurrence_id=m["recurrence_id"],
        title=m["title"],
        description=m["description"],
        location=m["location"],
        start_utc=m["start_utc"],
        end_utc=m["end_utc"],
        all_day=bool(m["all_day"]),
        start_date=m["start_date"],
        end_date=m["end_date"],
        timezone=m["timezone"],
        status=m["status"],
        transparency=m["transparency"],
        mode=m["mode"],
        tags=m["tags"] or [],
        sub_tasks=m["sub_tasks"] or [],
        metadata=m["metadata"] or {},
    )


def row_to_stored(row: Any) -> StoredEvent:
    m = row._mapping
    return StoredEvent(
        id=m["id"],
        event=row_to_event(row),
        content_hash=m["content_hash"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def apply_overrides(event: CanonicalEvent, overrides: dict[str, Any] | None) -> CanonicalEvent:
    """``event`` with local edits on top: patched fields, sub-task flags, metadata patch."""
    if not overrides:
        return event
    data = event.model_dump()
    data.update(overrides.get("fields") or {})
    done = overrides.get("sub_tasks_done") or {}
    if done:
        data["sub_tasks"] = [{**t, "done": done.get(t["id"], t["done"])} for t in data["sub_tasks"]]
    patch = overrides.get("metadata") or {}
    if patch:
        meta = dict(data["metadata"])
        for k, v in patch.items():
            if v is None:
                meta.pop(k, None)
            else:
                meta[k] = v
        data["metadata"] = meta
    return CanonicalEvent.model_validate(data)


def merge_overrides(current: dict[str, Any] | None, **changes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: dict(v) for k, v in (current or {}).items()}
    for part, values in changes.items():
        if values:
            out.setdefault(part, {}).update(values)
    return out


def _follow_rederived(overrides: dict[str, Any], base: CanonicalEvent, json_fields: dict[str, Any]) -> None:
    """Adjust earlier local edits (in place) to an event whose derived fields were re-derived."""
    earlier = overrides.get("fields") or {}
    if "tags" in earlier and "tags" not in json_fields:
        earlier["tags"] = list(base.tags)
    flags = overrides.get("sub_tasks_done") or {}
    if flags:
        # Keep the flags that still hold; the others belong to items that
        # are gone or whose box the new text sets.
        now_done = {t.id: t.done for t in base.sub_tasks}
        overrides["sub_tasks_done"] = {k: v for k, v in flags.items() if now_done.get(k) == v}


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class SqlEventStore(EventStore):
    """Events in the ``events`` table, on SQLite or PostgreSQL.

    With ``ctx`` the store re-derives enriched fields through the kernel's
    :class:`EventIntake` when local edits change an event's text; without it
    (or without the service) local edits are stored as they are.
    """

    def __init__(self, ctx: Any = None) -> None:
        self.ctx = ctx

    def _intake(self) -> EventIntake | None:
        if self.ctx is None or not self.ctx.has_service(EventIntake):
            return None
        return self.ctx.service(EventIntake)

    async def _rederive(
        self, session: AsyncSession, event: CanonicalEvent, fields: dict[str, Any]
    ) -> CanonicalEvent | None:
        """``event`` with ``fields`` (JSON values) applied and its derived fields
        re-derived, or None when no text field changes (or nothing can re-derive)."""
        if not any(k in fields and fields[k] != getattr(event, k) for k in TEXT_FIELDS):
            return None
        intake = self._intake()
        if intake is None:
            return None
        inputs = {k: v for k, v in fields.items() if k not in DERIVED_FIELDS}
        edited = CanonicalEvent.model_validate({**event.model_dump(), **inputs})
        return await intake.rederive(session, event, edited)

    async def with_overrides(
        self, session: AsyncSession, event: CanonicalEvent, overrides: dict[str, Any] | None
    ) -> CanonicalEvent:
        """A new source version ``event`` with the local edits on top; when they
        change its text, the derived fields follow the local text."""
        if overrides:
            rederived = await self._rederive(session, event, overrides.get("fields") or {})
            if rederived is not None:
                event = rederived
        return apply_overrides(event, overrides)

    async def _rows_by_ids(self, session: AsyncSession, ids: list[int]) -> list[Any]:
        rows: list[Any] = []
        for chunk in _chunks(ids):
            rows.extend((await session.execute(select(T).where(T.c.id.in_(list(chunk))))).all())
        return rows

    async def _rows_by_keys(self, session: AsyncSession, keys: Iterable[EventKey], columns: Any = None) -> list[Any]:
        columns = columns if columns is not None else (T,)
        table = columns[0].table if hasattr(columns[0], "table") else columns[0]
        groups: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        for k in keys:
            groups[(k.source, k.calendar_id)].add((k.uid, k.recurrence_id))
        dialect = session.get_bind().dialect.name
        rows: list[Any] = []
        for (source, calendar_id), pairs in groups.items():
            # One statement per calendar: the uids travel as one parameter and each seeks the
            # unique index (a row-value IN over (uid, recurrence_id) made SQLite scan the calendar).
            uids = sorted({uid for uid, _ in pairs})
            stmt = select(*columns).where(
                table.c.source == source, table.c.calendar_id == calendar_id, one_of(table.c.uid, uids, dialect)
            )
            rows.extend(r for r in (await session.execute(stmt)).all() if (r.uid, r.recurrence_id) in pairs)
        return rows

    async def apply(
        self, session: AsyncSession, upserts: list[CanonicalEvent], deletions: list[EventKey]
    ) -> ApplyResult:
        result = ApplyResult()
        by_key: dict[EventKey, CanonicalEvent] = {}
        for event in upserts:
            by_key[event.key] = event  # the last version of a key in a batch wins
        now = utcnow()
        inserts, updates = await self._plan(session, by_key, result, now) if by_key else ([], [])
        if inserts:
            ids = await self._insert_events(session, inserts, now)
            for (event, source_hash), new_id in zip(inserts, ids, strict=True):
                result.added.append(StoredEvent(new_id, event, source_hash, now, now))
        if updates:
            await self._update_rows(session, [(row.id, v) for row, _, v in updates])
            for row, stored, values in updates:
                result.updated.append(StoredEvent(row.id, stored, values["content_hash"], row.created_at, now))
                result.previous[row.id] = row_to_event(row)
        if deletions:
            await self._delete_keys(session, deletions, result)
        await self.widen_spans(session, [e for e, _ in inserts] + [s for _, s, _ in updates])
        return result

    async def _plan(
        self, session: AsyncSession, by_key: dict[EventKey, CanonicalEvent], result: ApplyResult, now: datetime
    ) -> tuple[list[tuple[CanonicalEvent, str]], list[tuple[Any, CanonicalEvent, dict[str, Any]]]]:
        """Sort the upserts into new rows (with their hashes) and changed rows (counting suppressed
        and unchanged ones)."""
        inserts: list[tuple[CanonicalEvent, str]] = []
        existing, hidden = await self._stored_or_hidden(session, by_key)
        changed: list[tuple[Any, CanonicalEvent, str]] = []
        for key, event in by_key.items():
            if key in hidden:
                result.suppressed += 1
                continue
            source_hash = event.content_hash()
            row = existing.get(key)
            if row is None:
                inserts.append((event, source_hash))
            elif row.source_hash == source_hash:
                result.unchanged += 1
            else:
                changed.append((row, event, source_hash))
        return inserts, await self._changed_rows(session, changed, now)

    async def _stored_or_hidden(
        self, session: AsyncSession, keys: Iterable[EventKey]
    ) -> tuple[dict[EventKey, Any], set[EventKey]]:
        """The stored rows (``NARROW`` columns) of ``keys``, and those of the other keys that a
        tombstone hides: one statement per calendar (events and tombstones together)."""
        groups: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        for k in keys:
            groups[(k.source, k.calendar_id)].add((k.uid, k.recurrence_id))
        dialect = session.get_bind().dialect.name
        existing: dict[EventKey, Any] = {}
        tombstoned: set[EventKey] = set()
        for (source, calendar_id), pairs in groups.items():
            uids = sorted({uid for uid, _ in pairs})
            stored = select(literal(False).label("tombstone"), *NARROW).where(
                T.c.source == source, T.c.calendar_id == calendar_id, one_of(T.c.uid, uids, dialect)
            )
            hiding = select(literal(True), null(), *TOMB_KEY, null(), null()).where(
                TOMB.c.source == source, TOMB.c.calendar_id == calendar_id, one_of(TOMB.c.uid, uids, dialect)
            )
            for r in (await session.execute(union_all(stored, hiding))).all():
                if (r.uid, r.recurrence_id) not in pairs:
                    continue
                key = EventKey(source, calendar_id, r.uid, r.recurrence_id)
                if r.tombstone:
                    tombstoned.add(key)
                else:
                    existing[key] = r
        # A key with a row is stored, whatever else says.
        return existing, tombstoned - existing.keys()

    async def _changed_rows(
        self, session: AsyncSession, changed: list[tuple[Any, CanonicalEvent, str]], now: datetime
    ) -> list[tuple[Any, CanonicalEvent, dict[str, Any]]]:
        """(previous full row, new stored event, column values) per changed event, local edits re-applied."""
        if not changed:
            return []
        # Full rows only for what changed: sinks get the previous version.
        full = {r.id: r for r in await self._rows_by_ids(session, [row.id for row, _, _ in changed])}
        updates = []
        for row, event, source_hash in changed:
            stored = await self.with_overrides(session, event, row.local_overrides)
            values = row_values(stored)
            values.update(content_hash=stored.content_hash(), source_hash=source_hash, updated_at=now)
            updates.append((full[row.id], stored, values))
        return updates

    async def _delete_keys(self, session: AsyncSession, deletions: list[EventKey], result: ApplyResult) -> None:
        rows = await self._rows_by_keys(session, set(deletions))
        if rows:
            ids = [r.id for r in rows]
            for chunk in _chunks(ids):
                await session.execute(delete(T).where(T.c.id.in_(list(chunk))))
            result.deleted.extend(row_to_stored(r) for r in rows)

    async def widen_spans(self, session: AsyncSession, events: Iterable[CanonicalEvent]) -> None:
        """Raise ``events_spans`` to cover the durations of ``events`` (one statement)."""
        longest: dict[str, int] = {}
        for e in events:
            d = duration_seconds(e)
            if d > longest.get(e.calendar_id, -1):
                longest[e.calendar_id] = d
        if not longest:
            return
        greatest = "max" if session.get_bind().dialect.name == "sqlite" else "GREATEST"
        await session.execute(
            text(
                "INSERT INTO events_spans (calendar_id, max_duration_seconds) VALUES (:c, :d)"
                " ON CONFLICT (calendar_id) DO UPDATE SET max_duration_seconds ="
                f" {greatest}(events_spans.max_duration_seconds, excluded.max_duration_seconds)"
            ),
            [{"c": c, "d": d} for c, d in sorted(longest.items())],
        )

    async def _insert_events(
        self, session: AsyncSession, events: list[tuple[CanonicalEvent, str]], now: datetime
    ) -> list[int]:
        """Insert new events with their content hashes; returns their ids in order."""
        if session.get_bind().dialect.name == "sqlite":
            stamp = _sqlite_time(now)
            return await self._insert_rows(session, [_sqlite_new_row(e, h, stamp) for e, h in events])
        rows = []
        for event, content_hash in events:
            values = row_values(event)
            values.update(
                content_hash=content_hash,
                source_hash=content_hash,
                local_overrides=None,
                created_at=now,
                updated_at=now,
            )
            rows.append(values)
        return await self._insert_rows(session, rows)

    async def _insert_rows(self, session: AsyncSession, rows: list[Any]) -> list[int]:
        """Insert new rows; returns their ids in the order of ``rows``.

        SQLite: one ``executemany`` on the driver connection (a single hop to
        its thread, the loop in C), then the new ids read back by primary-key
        range: the write transaction holds SQLite's only write lock, so every
        row above the previous maximum is ours. PostgreSQL: a multi-row INSERT
        … RETURNING, ids matched by key (ordered RETURNING would make
        SQLAlchemy insert row by row).

        ``rows`` are tuples in ``INSERT_COLUMNS`` order on SQLite (see :func:`_sqlite_new_row`),
        column dicts on PostgreSQL.
        """
        if session.get_bind().dialect.name == "sqlite":
            aio = await _driver(session)
            before = (await aio.execute_fetchall("SELECT COALESCE(MAX(id), 0) FROM events"))[0][0]
            await aio.executemany(SQLITE_INSERT, rows)
            returned = await aio.execute_fetchall(
                "SELECT id, source, calendar_id, uid, recurrence_id FROM events WHERE id > ?", (before,)
            )
            keys = [r[:4] for r in rows]
        else:
            stmt = insert(T).returning(T.c.id, T.c.source, T.c.calendar_id, T.c.uid, T.c.recurrence_id)
            returned = (await session.execute(stmt, rows)).all()
            keys = [(v["source"], v["calendar_id"], v["uid"], v["recurrence_id"]) for v in rows]
        by_key = {(r[1], r[2], r[3], r[4]): r[0] for r in returned}
        return [by_key[k] for k in keys]

    async def _update_rows(self, session: AsyncSession, rows: list[tuple[int, dict[str, Any]]]) -> None:
        """Rewrite the content of existing rows (keys never change), in one executemany."""
        if session.get_bind().dialect.name == "sqlite":
            aio = await _driver(session)
            await aio.executemany(SQLITE_UPDATE, [(*_sqlite_row(v, UPDATE_COLUMNS), event_id) for event_id, v in rows])
            return
        stmt = update(T).where(T.c.id == bindparam("_id")).values({c: bindparam("v_" + c) for c in UPDATE_COLUMNS})
        await session.execute(
            stmt, [{"_id": event_id, **{"v_" + c: v[c] for c in UPDATE_COLUMNS}} for event_id, v in rows]
        )

    async def keys(self, session: AsyncSession, source: str, calendar_id: str) -> set[EventKey]:
        stmt = select(T.c.uid, T.c.recurrence_id).where(T.c.source == source, T.c.calendar_id == calendar_id)
        return {EventKey(source, calendar_id, uid, rid) for uid, rid in (await session.execute(stmt)).all()}

    async def keys_of(self, session: AsyncSession, source: str, calendar_id: str, uids: set[str]) -> set[EventKey]:
        out: set[EventKey] = set()
        ordered = sorted(uids)
        for i in range(0, len(ordered), 500):  # bounded IN lists
            stmt = select(T.c.uid, T.c.recurrence_id).where(
                T.c.source == source, T.c.calendar_id == calendar_id, T.c.uid.in_(ordered[i : i + 500])
            )
            out.update(EventKey(source, calendar_id, uid, rid) for uid, rid in (await session.execute(stmt)).all())
        return out

    async def row(self, session: AsyncSession, event_id: int) -> Any:
        return (await session.execute(select(T).where(T.c.id == event_id))).first()

    async def get(self, session: AsyncSession, event_id: int) -> StoredEvent | None:
        row = await self.row(session, event_id)
        return None if row is None else row_to_stored(row)

    async def get_by_key(self, session: AsyncSession, key: EventKey) -> StoredEvent | None:
        rows = await self._rows_by_keys(session, [key])
        return row_to_stored(rows[0]) if rows else None

    async def remove(self, session: AsyncSession, event_id: int, *, tombstone: bool, reason: str) -> bool:
        row = await self.row(session, event_id)
        if row is None:
            return False
        await session.execute(delete(T).where(T.c.id == event_id))
        if tombstone:
            await self.add_tombstone(session, EventKey(row.source, row.calendar_id, row.uid, row.recurrence_id), reason)
        return True

    async def add_tombstone(self, session: AsyncSession, key: EventKey, reason: str) -> None:
        await session.execute(
            text(
                "INSERT INTO events_tombstones (source, calendar_id, uid, recurrence_id, reason, created_at)"
                " VALUES (:s, :c, :u, :r, :reason, :at) ON CONFLICT (source, calendar_id, uid, recurrence_id)"
                " DO UPDATE SET reason = excluded.reason"
            ).bindparams(bindparam("at", type_=T.c.created_at.type)),
            {
                "s": key.source,
                "c": key.calendar_id,
                "u": key.uid,
                "r": key.recurrence_id,
                "reason": reason[:200],
                "at": utcnow(),
            },
        )

    async def update_metadata(self, session: AsyncSession, event_id: int, patch: dict[str, Any]) -> None:
        row = await self.row(session, event_id)
        if row is None:
            raise KeyError(f"no event {event_id}")
        await self.patch(session, row, metadata=patch)

    async def patch(
        self,
        session: AsyncSession,
        row: Any,
        *,
        fields: dict[str, Any] | None = None,
        sub_tasks_done: dict[str, bool] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[StoredEvent, CanonicalEvent]:
        """Apply a local edit to a stored row; returns (new stored event, previous event).

        The edit is remembered in ``local_overrides`` so a later sync of a
        changed source entry keeps it. ``all_done`` and ``content_hash`` are
        recomputed; ``source_hash`` stays as the source delivered it.

        When ``fields`` change the title, description or location, the event is
        run through the enrichers again (:meth:`EventIntake.rederive`) before it
        is written, so derived data follows the new text:

        * Tags the old text implied (``#tags``, keyword labels) are replaced by
          those the new text implies; every other tag stays, whether it came
          with the event or from an earlier edit. If an earlier edit set the
          tag list explicitly, that list is updated the same way and stays an
          override. ``tags`` given in the same edit win: they are stored as
          given, with nothing derived added.
        * Sub-tasks become the checklist of the new text. An item that is
          still there keeps its done flag (also one ticked through the API)
          unless the edit changed its box; flags of items that are gone are
          forgotten. ``sub_tasks_done`` of the same edit apply last.
        * Enricher hints in metadata are recomputed; ``metadata`` of the same
          edit applies last.

        Derived values are not stored as overrides: a re-sync derives them
        again from the local text. Raises :class:`UnknownSubTask` when
        ``sub_tasks_done`` names an id the resulting event does not have, and
        ``ValidationError`` when the edit would make the event invalid.
        """
        previous = row_to_event(row)
        json_fields: dict[str, Any] = {}
        if fields:
            json_fields = CanonicalEvent.model_validate({**previous.model_dump(), **fields}).model_dump(
                mode="json", include=set(fields)
            )
        overrides = merge_overrides(row.local_overrides, fields=json_fields, metadata=metadata or {})
        base = previous
        rederived = await self._rederive(session, previous, json_fields)
        if rederived is not None:
            base = rederived
            _follow_rederived(overrides, base, json_fields)
        if sub_tasks_done:
            known = {t.id for t in base.sub_tasks}
            for task_id in sub_tasks_done:
                if task_id not in known:
                    raise UnknownSubTask(task_id)
            overrides = merge_overrides(overrides, sub_tasks_done=sub_tasks_done)
        overrides = {k: v for k, v in overrides.items() if v}
        return await self._write_patch(session, row, apply_overrides(base, overrides), overrides), previous

    async def _write_patch(
        self, session: AsyncSession, row: Any, stored: CanonicalEvent, overrides: dict[str, Any]
    ) -> StoredEvent:
        now = utcnow()
        values = row_values(stored)
        for k in ("source", "calendar_id", "uid", "recurrence_id"):
            values.pop(k)
        values.update(content_hash=stored.content_hash(), local_overrides=overrides, updated_at=now)
        await session.execute(update(T).where(T.c.id == row.id).values(values))
        await self.widen_spans(session, [stored])
        return StoredEvent(row.id, stored, values["content_hash"], row.created_at, now)

    async def insert_many(self, session: AsyncSession, events: list[CanonicalEvent]) -> list[int]:
        """Insert new rows (import): returns their ids in order."""
        if not events:
            return []
        ids = await self._insert_events(session, [(e, e.content_hash()) for e in events], utcnow())
        await self.widen_spans(session, events)
        return ids
