"""Notes and links taken from calendar entries (``NOTIZ:``/``NOTE:``, ``URL:``): reading them back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from chronos.plugin import MalformedInput, PluginContext, decode_cursor, encode_cursor

from chronos_commands.models import Link, Note
from chronos_commands.queue import iso
from chronos_commands.whitelist import Violation, refusal

NT = Note.__table__
LT = Link.__table__
_BAD_CURSOR = "The cursor is invalid or belongs to another query; start again without it"


def _ref(row: Any) -> dict[str, Any]:
    return {
        "source": row["source"],
        "calendar_id": row["calendar_id"],
        "uid": row["source_uid"],
        "recurrence_id": row["recurrence_id"],
        "event_id": row["event_id"],
    }


def note_view(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "content": row["content"],
        "description": row["description"],
        "timestamp": iso(row["timestamp"]),
        "calendar_id": row["calendar_id"],
        "source": _ref(row),
        "created_at": iso(row["created_at"]),
    }


def link_view(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "title": row["title"],
        "description": row["description"],
        "timestamp": iso(row["timestamp"]),
        "calendar_id": row["calendar_id"],
        "source": _ref(row),
        "created_at": iso(row["created_at"]),
    }


def _after_cursor(table: Any, kind: str, cursor: str) -> Any:
    """The keyset condition of a (timestamp, id) cursor, newest first."""
    ts_text, last_id = decode_cursor(kind, cursor, [str, int])
    try:
        ts = datetime.fromisoformat(ts_text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedInput(_BAD_CURSOR, type="invalid-cursor") from None
    if ts.tzinfo is None:
        raise MalformedInput(_BAD_CURSOR, type="invalid-cursor")
    return (table.c.timestamp < ts) | ((table.c.timestamp == ts) & (table.c.id < last_id))


async def _page(
    ctx: PluginContext,
    table: Any,
    kind: str,
    view: Callable[[Any], dict[str, Any]],
    *,
    calendar_id: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    if start is not None and end is not None and start > end:
        raise refusal([Violation("/query/from", "must not be after 'to'")])
    q = select(table)
    if calendar_id:
        q = q.where(table.c.calendar_id.in_(calendar_id))
    if start is not None:
        q = q.where(table.c.timestamp >= start)
    if end is not None:
        q = q.where(table.c.timestamp < end)
    if cursor:
        q = q.where(_after_cursor(table, kind, cursor))
    q = q.order_by(table.c.timestamp.desc(), table.c.id.desc()).limit(limit + 1)
    async with ctx.db.read() as s:
        rows = (await s.execute(q)).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(kind, [iso(rows[-1]["timestamp"]), rows[-1]["id"]]) if more else None
    return {"items": [view(r) for r in rows], "next_cursor": nxt}


async def list_notes(
    ctx: PluginContext,
    *,
    calendar_id: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Notes newest first, optionally of some calendars and within [start, end)."""
    return await _page(
        ctx, NT, "notes", note_view, calendar_id=calendar_id, start=start, end=end, limit=limit, cursor=cursor
    )


async def list_links(
    ctx: PluginContext,
    *,
    calendar_id: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Links newest first, optionally of some calendars and within [start, end)."""
    return await _page(
        ctx, LT, "links", link_view, calendar_id=calendar_id, start=start, end=end, limit=limit, cursor=cursor
    )
