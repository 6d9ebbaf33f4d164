"""``event.updated`` and ``event.deleted`` for edits through the API (synced changes are published by a sink)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import Outbox, PluginContext


def _iso(value: Any) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def publish_change(ctx: PluginContext, s: AsyncSession, event_type: str, row: Any) -> None:
    """Publish a stored row's change with ``s`` (nothing when no outbox is enabled)."""
    if not ctx.has_service(Outbox) or event_type not in ctx.event_types:
        return
    payload = {
        "id": row.id,
        "source": row.source,
        "calendar_id": row.calendar_id,
        "uid": row.uid,
        "recurrence_id": row.recurrence_id,
        "title": row.title,
        "start": _iso(row.start_utc),
        "end": _iso(row.end_utc),
        "all_day": row.all_day,
        "status": row.status,
        "tags": list(row.tags or []),
        "run_id": None,
    }
    await ctx.service(Outbox).enqueue(s, event_type, payload, calendar_id=row.calendar_id)
