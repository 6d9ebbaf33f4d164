"""Publishes ``event.created``, ``event.updated`` and ``event.deleted`` for every stored change of a batch."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import Outbox, PluginContext, Publication, Resource, Sink, SinkBatch, StoredEvent, type_matches

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


class EndpointFilters:
    """The enabled endpoints' filters (event types, calendars), read again only after an endpoint changed.

    A sync batch asks for them in its write transaction, and so does every endpoint change
    (:meth:`changed`, before its commit). On a SQLite file every write transaction holds the
    database's one write lock, and a change writes a new token to ``<database>.webhooks-endpoints``
    while it holds it: a change committed before a batch began has its token in place when the
    batch looks, so the batch reads the filters again (in any process); one committed after the
    batch needs none of its changes. An in-memory database has one process: a counter does. On
    PostgreSQL (replicas on several hosts) the filters are read by every batch (one small query).
    """

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.token_file: Path | None = None
        self.shared = not ctx.db.is_sqlite  # other hosts may change endpoints: no cache
        if ctx.db.is_sqlite:
            database = make_url(ctx.db.url).database
            if database and database != ":memory:" and not database.startswith("file:"):
                self.token_file = (
                    Path(database).expanduser().resolve().with_name(Path(database).name + ".webhooks-endpoints")
                )
            elif database and database.startswith("file:"):
                self.shared = True  # a URI may name a file other processes open: read every batch
        self._counter = 0
        self._cached: tuple[Any, list[tuple[list[str], list[str] | None]]] | None = None

    def _token(self) -> Any:
        if self.token_file is None:
            return self._counter
        try:
            return self.token_file.read_bytes()
        except FileNotFoundError:
            return b""

    def changed(self) -> None:
        """Call inside the write transaction that changes an endpoint, before it commits."""
        self._cached = None
        self._counter += 1
        if self.token_file is not None:
            part = self.token_file.with_name(f"{self.token_file.name}.{os.getpid()}.tmp")
            part.write_bytes(secrets.token_bytes(16))
            os.replace(part, self.token_file)  # readers see the old token or the new one, never half

    async def rows(self, session: AsyncSession) -> list[tuple[list[str], list[str] | None]]:
        """``(event_types, calendars)`` of every enabled endpoint, as of ``session``'s transaction."""
        token = None if self.shared else self._token()
        if self._cached is not None and token is not None and self._cached[0] == token:
            return self._cached[1]
        result = await session.execute(
            select(EndpointRow.event_types, EndpointRow.calendars).where(EndpointRow.enabled.is_(True))
        )
        rows = [(list(filters), calendars) for filters, calendars in result]
        if token is not None:
            self._cached = (token, rows)
        return rows


ENDPOINT_FILTERS: Resource[EndpointFilters] = Resource("webhooks.endpoint_filters", EndpointFilters)


async def subscribed(
    session: AsyncSession, ctx: PluginContext, kinds: Sequence[str], calendar_id: str | None
) -> set[str]:
    """The event kinds of ``kinds`` someone takes for this calendar (None: for any calendar): an
    enabled endpoint or a plugin target (at most one small query, none while no endpoint changed;
    see :class:`EndpointFilters`)."""
    wanted = {k for k in kinds for t in ctx.delivery_targets.values() if t.accepts(k)}
    if len(wanted) == len(kinds):
        return wanted
    for filters, calendars in await ctx.resource(ENDPOINT_FILTERS).rows(session):
        if calendar_id is not None and calendars and calendar_id not in calendars:
            continue
        wanted |= {k for k in kinds if any(type_matches(f, k) for f in filters)}
    return wanted


class OutboxSink(Sink):
    """One bulk INSERT per batch with changes someone subscribes to.

    A batch without changes costs nothing; one whose changes nobody takes (no
    endpoint or target for ``event.*`` on that calendar) publishes nothing, so a
    large first sync does not fill the outbox for no one — and on SQLite costs
    no query either while no endpoint changes. An endpoint receives the changes
    committed after it exists.
    """

    name = "webhooks.outbox"
    order = 900  # after the sinks that store or act, so it reports what they committed

    async def write(self, batch: SinkBatch, session: AsyncSession, ctx: PluginContext) -> None:
        if not (batch.added or batch.updated or batch.deleted) or not ctx.has_service(Outbox):
            return
        wanted = await subscribed(session, ctx, KINDS, batch.calendar_id)
        if not wanted:
            return
        messages = [
            Publication(kind, event_payload(stored, batch), calendar_id=batch.calendar_id)
            for kind, items in zip(KINDS, (batch.added, batch.updated, batch.deleted), strict=True)
            if kind in wanted
            for stored in items
        ]
        await ctx.service(Outbox).enqueue_many(session, messages)
