"""Publishes ``event.created``, ``event.updated`` and ``event.deleted`` for every stored change of a batch."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import Outbox, PluginContext, Publication, Sink, SinkBatch, StoredEvent


def event_payload(stored: StoredEvent, batch: SinkBatch) -> dict[str, Any]:
    e = stored.event
    return {
        "id": stored.id,
        "source": e.source,
        "calendar_id": e.calendar_id,
        "uid": e.uid,
        "recurrence_id": e.recurrence_id,
        "title": e.title,
        "start": e.start_utc.isoformat().replace("+00:00", "Z"),
        "end": e.end_utc.isoformat().replace("+00:00", "Z"),
        "all_day": e.all_day,
        "status": e.status,
        "tags": list(e.tags),
        "run_id": batch.run_id,
    }


class OutboxSink(Sink):
    """One bulk INSERT per batch with changes; a batch without changes costs nothing."""

    name = "webhooks.outbox"
    order = 900  # after the sinks that store or act, so it reports what they committed

    async def write(self, batch: SinkBatch, session: AsyncSession, ctx: PluginContext) -> None:
        if not (batch.added or batch.updated or batch.deleted) or not ctx.has_service(Outbox):
            return
        messages = [
            Publication(kind, event_payload(stored, batch), calendar_id=batch.calendar_id)
            for kind, items in (
                ("event.created", batch.added),
                ("event.updated", batch.updated),
                ("event.deleted", batch.deleted),
            )
            for stored in items
        ]
        await ctx.service(Outbox).enqueue_many(session, messages)
