"""Publishes ``event.created``, ``event.updated`` and ``event.deleted`` for every stored change of a batch."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import Outbox, PluginContext, Publication, Sink, SinkBatch, StoredEvent, type_matches

from chronos_webhooks.models import EndpointRow


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


KINDS = ("event.created", "event.updated", "event.deleted")


async def subscribed(session: AsyncSession, ctx: PluginContext, calendar_id: str) -> set[str]:
    """The event kinds someone takes for this calendar: an enabled endpoint or a plugin target (one query)."""
    wanted = {k for k in KINDS for t in ctx.delivery_targets.values() if t.accepts(k)}
    if len(wanted) == len(KINDS):
        return wanted
    rows = await session.execute(
        select(EndpointRow.event_types, EndpointRow.calendars).where(EndpointRow.enabled.is_(True))
    )
    for filters, calendars in rows:
        if calendars and calendar_id not in calendars:
            continue
        wanted |= {k for k in KINDS if any(type_matches(f, k) for f in filters)}
    return wanted


class OutboxSink(Sink):
    """One bulk INSERT per batch with changes someone subscribes to.

    A batch without changes costs nothing; one whose changes nobody takes (no
    endpoint or target for ``event.*`` on that calendar) costs one small query
    and publishes nothing, so a large first sync does not fill the outbox for
    no one. An endpoint receives the changes committed after it exists.
    """

    name = "webhooks.outbox"
    order = 900  # after the sinks that store or act, so it reports what they committed

    async def write(self, batch: SinkBatch, session: AsyncSession, ctx: PluginContext) -> None:
        if not (batch.added or batch.updated or batch.deleted) or not ctx.has_service(Outbox):
            return
        wanted = await subscribed(session, ctx, batch.calendar_id)
        if not wanted:
            return
        messages = [
            Publication(kind, event_payload(stored, batch), calendar_id=batch.calendar_id)
            for kind, items in zip(KINDS, (batch.added, batch.updated, batch.deleted), strict=True)
            if kind in wanted
            for stored in items
        ]
        await ctx.service(Outbox).enqueue_many(session, messages)
