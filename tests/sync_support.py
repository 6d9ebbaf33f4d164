"""An in-process event store, sources and stages for the sync pipeline's tests.

``TableStore`` keeps events in a real table of the test database (created by
its plugin's ``on_startup`` on a private MetaData, never the shared one), so
savepoints, rollbacks and crash-and-resume behave exactly as with the real
store. It counts the statements that write events.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, UniqueConstraint, delete, insert, select, update

from chronos.db.base import UTCDateTime, utcnow
from chronos.plugin import (
    ApplyResult,
    CanonicalEvent,
    Enricher,
    EventDraft,
    EventKey,
    EventStore,
    Normalizer,
    Service,
    Sink,
    StoredEvent,
)
from chronos.testing import FakeSource, fake_source_plugin
from kernel_support import make_plugin

_md = MetaData()
events_t = Table(
    "teststore_events",
    _md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("calendar_id", String(200), nullable=False),
    Column("uid", String(1024), nullable=False),
    Column("recurrence_id", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("source", "calendar_id", "uid", "recurrence_id", name="uq_teststore_key"),
)
tombstones_t = Table(
    "teststore_tombstones",
    _md,
    Column("source", String(64), primary_key=True),
    Column("calendar_id", String(200), primary_key=True),
    Column("uid", String(1024), primary_key=True),
    Column("recurrence_id", String(64), primary_key=True),
)


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(row.id, CanonicalEvent.model_validate(row.payload), row.hash, row.created_at, row.updated_at)


class TableStore(EventStore):
    """A small but honest EventStore: one row per key, content hashes, tombstones."""

    def __init__(self) -> None:
        self.writes = 0

    async def apply(self, session, upserts, deletions):
        res = ApplyResult()
        by_cal: dict[tuple[str, str], list[CanonicalEvent]] = {}
        for ev in upserts:
            by_cal.setdefault((ev.source, ev.calendar_id), []).append(ev)
        for (source, cal), evs in by_cal.items():
            uids = sorted({e.uid for e in evs})
            rows = (
                await session.execute(
                    select(events_t).where(
                        events_t.c.source == source, events_t.c.calendar_id == cal, events_t.c.uid.in_(uids)
                    )
                )
            ).all()
            existing = {(r.uid, r.recurrence_id): r for r in rows}
            tombs = {
                (r.uid, r.recurrence_id)
                for r in (
                    await session.execute(
                        select(tombstones_t).where(
                            tombstones_t.c.source == source,
                            tombstones_t.c.calendar_id == cal,
                            tombstones_t.c.uid.in_(uids),
                        )
                    )
                ).all()
            }
            for ev in evs:
                k = (ev.uid, ev.recurrence_id)
                if k in tombs:
                    res.suppressed += 1
                    continue
                h = ev.content_hash()
                payload = ev.model_dump(mode="json")
                row = existing.get(k)
                now = utcnow()
                if row is None:
                    new_id = (
                        await session.execute(
                            insert(events_t)
                            .values(
                                source=source,
                                calendar_id=cal,
                                uid=ev.uid,
                                recurrence_id=ev.recurrence_id,
                                hash=h,
                                payload=payload,
                                created_at=now,
                                updated_at=now,
                            )
                            .returning(events_t.c.id)
                        )
                    ).scalar_one()
                    self.writes += 1
                    res.added.append(StoredEvent(new_id, ev, h, now, now))
                    existing[k] = SimpleNamespace(id=new_id, hash=h, payload=payload, created_at=now)
                elif row.hash == h:
                    res.unchanged += 1
                else:
                    await session.execute(
                        update(events_t).where(events_t.c.id == row.id).values(hash=h, payload=payload, updated_at=now)
                    )
                    self.writes += 1
                    res.previous[row.id] = CanonicalEvent.model_validate(row.payload)
                    res.updated.append(StoredEvent(row.id, ev, h, row.created_at, now))
        for key in deletions:
            row = (
                await session.execute(
                    select(events_t).where(
                        events_t.c.source == key.source,
                        events_t.c.calendar_id == key.calendar_id,
                        events_t.c.uid == key.uid,
                        events_t.c.recurrence_id == key.recurrence_id,
                    )
                )
            ).first()
            if row is not None:
                await session.execute(delete(events_t).where(events_t.c.id == row.id))
                self.writes += 1
                res.deleted.append(_stored(row))
        return res

    async def keys(self, session, source, calendar_id):
        rows = (
            await session.execute(
                select(events_t.c.uid, events_t.c.recurrence_id).where(
                    events_t.c.source == source, events_t.c.calendar_id == calendar_id
                )
            )
        ).all()
        return {EventKey(source, calendar_id, r.uid, r.recurrence_id) for r in rows}

    async def get(self, session, event_id):
        row = (await session.execute(select(events_t).where(events_t.c.id == event_id))).first()
        return None if row is None else _stored(row)

    async def remove(self, session, event_id, *, tombstone, reason):
        row = (await session.execute(select(events_t).where(events_t.c.id == event_id))).first()
        if row is None:
            return False
        await session.execute(delete(events_t).where(events_t.c.id == event_id))
        if tombstone:
            await session.execute(
                insert(tombstones_t).values(
                    source=row.source, calendar_id=row.calendar_id, uid=row.uid, recurrence_id=row.recurrence_id
                )
            )
        return True

    async def update_metadata(self, session, event_id, patch):
        row = (await session.execute(select(events_t).where(events_t.c.id == event_id))).first()
        payload = dict(row.payload)
        meta = {**payload.get("metadata", {}), **patch}
        payload["metadata"] = {k: v for k, v in meta.items() if v is not None}
        await session.execute(update(events_t).where(events_t.c.id == event_id).values(payload=payload))


async def stored_rows(app: Any, source: str = "fake", calendar_id: str = "cal") -> dict[tuple[str, str], dict]:
    """(uid, recurrence_id) -> payload of every stored event of one calendar."""
    async with app.state.chronos.db.read() as s:
        rows = (
            await s.execute(select(events_t).where(events_t.c.source == source, events_t.c.calendar_id == calendar_id))
        ).all()
    return {(r.uid, r.recurrence_id): r.payload for r in rows}


async def row_count(app: Any) -> int:
    async with app.state.chronos.db.read() as s:
        return len((await s.execute(select(events_t.c.id))).all())


def at(hours: float) -> datetime:
    return datetime(2026, 3, 2, 9, tzinfo=UTC) + timedelta(hours=hours)


def draft(uid: str, title: str = "", hours: float = 0, **kw: Any) -> EventDraft:
    return EventDraft(uid=uid, start=at(hours), end=at(hours + 1), title=title or uid, **kw)


class Raising:
    """Mixin: raise on items whose title contains ``trigger`` (or on every call when ``always``)."""

    trigger = "boom"
    always = False

    def check(self, titles: list[str]) -> None:
        if self.always or any(self.trigger in t for t in titles):
            raise RuntimeError(f"{self.name} cannot handle {self.trigger!r}")


class RaisingNormalizer(Raising, Normalizer):
    name = "picky_normalizer"
    order = 50

    async def normalize(self, drafts, ctx):
        self.check([d.title for d in drafts])


class UpperEnricher(Raising, Enricher):
    """Upper-cases titles (so the test sees it ran) and raises on ``trigger``."""

    name = "upper"
    order = 10

    def __init__(self) -> None:
        self.calls = 0

    async def enrich(self, events, session, ctx):
        self.calls += 1
        self.check([e.title for e in events])
        for e in events:
            e.title = e.title.upper()


class RecordingSink(Raising, Sink):
    """Records every batch it sees; raises on ``trigger``; ``consume`` removes matching events."""

    name = "recorder"
    order = 10
    trigger = "explode"

    def __init__(self) -> None:
        self.batches: list[Any] = []
        self.consume: str | None = None
        self.gate: asyncio.Event | None = None
        self.entered: asyncio.Event = asyncio.Event()

    async def write(self, batch, session, ctx):
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.check([s.event.title for s in batch.added + batch.updated])
        self.batches.append(batch)
        if self.consume:
            store = ctx.service(EventStore)
            for s in batch.added:
                if self.consume in s.event.title:
                    await store.remove(session, s.id, tombstone=True, reason="consumed")

    @property
    def seen_added(self) -> list[str]:
        return [s.event.uid for b in self.batches for s in b.added]


async def _create_tables(ctx: Any) -> None:
    async with ctx.db.write() as s:
        await s.run_sync(lambda sync_session: _md.create_all(sync_session.connection()))


def store_plugin(store: TableStore) -> Any:
    return make_plugin(
        register_services=lambda: [Service("teststore", EventStore, lambda ctx: store)],
        on_startup=_create_tables,
    )


def pipeline_plugins(source: FakeSource | None = None, store: TableStore | None = None, **stages: Any) -> list[Any]:
    """(name, plugin) pairs: the store, the source (plugin ``fakesource``), and optional
    normalizers/enrichers/sinks (plugin ``fakesync``)."""
    out: list[Any] = [("teststore", store_plugin(store or TableStore()))]
    if source is not None:
        out.append(fake_source_plugin(source))
    hooks: dict[str, Any] = {}
    for hook in ("normalizers", "enrichers", "sinks"):
        if hook in stages:
            records = stages[hook]
            hooks[f"register_{hook}"] = (lambda r: lambda: list(r))(records)
    if hooks:
        out.append(("fakesync", make_plugin(**hooks)))
    return out
