"""Export and import of events and links as one JSON document.

Format (version 1)::

    {"format": "chronos-events", "version": 1, "exported_at": "...Z",
     "events": [{"id": 7, "source": "ics", "calendar_id": "work", "uid": "...", ...}],
     "links":  [{"from_event_id": 7, "to_event_id": 9, "type": "blocks"}]}

The export streams page by page, so memory stays flat for any size. An import
is all or nothing (one transaction): events get new ids (the response maps old
to new), links whose ends are not in the document are dropped and reported.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import insert, select

from chronos.plugin import (
    CanonicalEvent,
    Conflict,
    EventIntake,
    InvalidInput,
    MalformedInput,
    Origin,
    PluginContext,
    Principal,
    SubTask,
    TooLarge,
    record_audit,
)

from chronos_events.models import EventLink
from chronos_events.query import iso_z, stored_item
from chronos_events.service import event_store, validation_error
from chronos_events.settings import EventsSettings
from chronos_events.source import LOCAL_SOURCE
from chronos_events.store import CHUNK, T

FORMAT = "chronos-events"
VERSION = 1
PAGE = 1000
EXPORT_DROP = ("all_done", "content_hash")
#: The problem type of a body over a size limit (as the kernel names a bare 413).
TOO_LARGE = "content-too-large"

L = EventLink.__table__
SourceKey = tuple[str, str, str, str]
Triple = tuple[Any, Any, str]


# -- export -------------------------------------------------------------------------------


async def _event_chunks(s: Any, calendars: list[str]) -> AsyncIterator[list[str]]:
    last = 0
    while True:
        stmt = select(T).where(T.c.id > last)
        if calendars:
            stmt = stmt.where(T.c.calendar_id.in_(calendars))
        rows = (await s.execute(stmt.order_by(T.c.id).limit(PAGE))).all()
        if not rows:
            return
        chunk = []
        for r in rows:
            item = stored_item(r)
            for k in EXPORT_DROP:
                item.pop(k, None)
            chunk.append(json.dumps(item, ensure_ascii=False))
        yield chunk
        last = rows[-1].id


async def _link_chunks(s: Any, calendars: list[str]) -> AsyncIterator[list[str]]:
    last = 0
    while True:
        stmt = select(L.c.id, L.c.from_event_id, L.c.to_event_id, L.c.type).where(L.c.id > last)
        if calendars:
            ids = select(T.c.id).where(T.c.calendar_id.in_(calendars))
            stmt = stmt.where(L.c.from_event_id.in_(ids), L.c.to_event_id.in_(ids))
        rows = (await s.execute(stmt.order_by(L.c.id).limit(PAGE))).all()
        if not rows:
            return
        yield [
            json.dumps({"from_event_id": r.from_event_id, "to_event_id": r.to_event_id, "type": r.type}) for r in rows
        ]
        last = rows[-1].id


async def _joined(chunks: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    """The JSON array items of ``chunks``, comma separated across chunks."""
    first = True
    async for chunk in chunks:
        yield (("" if first else ",") + ",".join(chunk)).encode()
        first = False


async def export_document(ctx: PluginContext, calendar_ids: Iterable[str]) -> AsyncIterator[bytes]:
    """The export document, streamed (events and links of ``calendar_ids``, or of all calendars)."""
    calendars = sorted(set(calendar_ids))
    head = {"format": FORMAT, "version": VERSION, "exported_at": iso_z(datetime.now(UTC))}
    yield (json.dumps(head)[:-1] + ', "events": [').encode()
    async with ctx.db.read() as s:
        if ctx.db.dialect == "postgresql":
            # One snapshot for every page, so links match the events exported.
            await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        async for part in _joined(_event_chunks(s, calendars)):
            yield part
        yield b'], "links": ['
        async for part in _joined(_link_chunks(s, calendars)):
            yield part
    yield b"]}"


# -- import -------------------------------------------------------------------------------


class ImportEvent(BaseModel):
    """An exported event; fields the store derives (all_done, hashes) are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: int
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    calendar_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    uid: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    recurrence_id: str = Field("", max_length=64)
    title: str = Field("", max_length=2000)
    description: str = Field("", max_length=100_000)
    location: str = Field("", max_length=2000)
    start_utc: AwareDatetime
    end_utc: AwareDatetime
    all_day: bool = False
    start_date: date | None = None
    end_date: date | None = None
    timezone: str | None = Field(None, max_length=64)
    status: Literal["confirmed", "tentative", "cancelled"] = "confirmed"
    transparency: Literal["busy", "free"] = "busy"
    mode: Literal["free", "auto-plan"] | None = None
    tags: list[str] = Field(default_factory=list)
    sub_tasks: list[SubTask] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> SourceKey:
        return (self.source, self.calendar_id, self.uid, self.recurrence_id)


class ImportLink(BaseModel):
    model_config = ConfigDict(extra="ignore")
    from_event_id: int
    to_event_id: int
    type: Literal["blocks", "relates", "follows"]


class ImportDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: Literal["chronos-events"]
    version: Literal[1]
    events: list[ImportEvent]
    links: list[ImportLink] = Field(default_factory=list)


def parse_document(raw: bytes, settings: EventsSettings) -> ImportDocument:
    """The import document in ``raw`` (400 if not JSON, 413 if too many events, 422 if invalid)."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedInput("The request body is not valid JSON", type="malformed-body") from None
    events = payload.get("events") if isinstance(payload, dict) else None
    if isinstance(events, list) and len(events) > settings.import_max_events:
        raise TooLarge(
            f"An import may hold at most {settings.import_max_events} events (events.import_max_events)", type=TOO_LARGE
        )
    try:
        # Strict JSON: an id is a number and a flag a boolean, as the document says (no `false` for 0).
        return ImportDocument.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _duplicate(pointer: str, detail: str) -> dict[str, Any]:
    return {"pointer": pointer, "location": "body", "detail": detail, "type": "value_error"}


def canonical_events(doc: ImportDocument) -> tuple[list[CanonicalEvent], dict[SourceKey, int]]:
    """The document's events as canonical events, and the index of each source key (422 on duplicates)."""
    events: list[CanonicalEvent] = []
    seen_ids: dict[int, int] = {}
    seen_keys: dict[SourceKey, int] = {}
    errors = []
    for i, item in enumerate(doc.events):
        if item.id in seen_ids:
            errors.append(_duplicate(f"/events/{i}/id", f"duplicate id (also /events/{seen_ids[item.id]})"))
            continue
        seen_ids[item.id] = i
        try:
            event = CanonicalEvent.model_validate(item.model_dump(exclude={"id"}))
        except ValidationError as exc:
            raise validation_error(exc, prefix=f"/events/{i}") from None
        if event.key in seen_keys:
            errors.append(_duplicate(f"/events/{i}/uid", f"duplicate source key (also /events/{seen_keys[event.key]})"))
            continue
        seen_keys[event.key] = i
        events.append(event)
    if errors:
        summary = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5])
        raise InvalidInput(f"The import is invalid: {summary}", type="validation", errors=errors)
    return events, seen_keys


async def _existing_ids(s: Any, keys: Iterable[SourceKey]) -> dict[SourceKey, int]:
    """Ids of the stored events among ``keys``."""
    wanted = set(keys)
    groups: dict[tuple[str, str], set[str]] = {}
    for key in wanted:
        groups.setdefault((key[0], key[1]), set()).add(key[2])
    existing: dict[SourceKey, int] = {}
    for (source, calendar_id), uid_set in groups.items():
        uids = sorted(uid_set)
        for start in range(0, len(uids), CHUNK):
            stmt = select(T.c.id, T.c.source, T.c.calendar_id, T.c.uid, T.c.recurrence_id).where(
                T.c.source == source, T.c.calendar_id == calendar_id, T.c.uid.in_(uids[start : start + CHUNK])
            )
            for r in (await s.execute(stmt)).all():
                key = (r.source, r.calendar_id, r.uid, r.recurrence_id)
                if key in wanted:
                    existing[key] = r.id
    return existing


def _refuse_conflicts(existing: dict[SourceKey, int]) -> None:
    sample = [
        {"source": k[0], "calendar_id": k[1], "uid": k[2], "recurrence_id": k[3], "id": v}
        for k, v in list(existing.items())[:20]
    ]
    raise Conflict(
        f"{len(existing)} event(s) of the import exist already; nothing was imported"
        " (use on_conflict=skip to keep the stored ones)",
        type="conflict",
        conflicts=sample,
    )


def _resolve_links(doc: ImportDocument, id_map: dict[str, Any]) -> tuple[list[Triple], list[dict[str, Any]]]:
    """The document's links as (from id, to id, type) with new ids, and the dropped ones with a reason."""
    links: list[Triple] = []
    dropped: list[dict[str, Any]] = []
    seen: set[Triple] = set()
    for link in doc.links:
        reason = None
        if str(link.from_event_id) not in id_map or str(link.to_event_id) not in id_map:
            reason = "an end of the link is not in the import"
        elif link.from_event_id == link.to_event_id:
            reason = "a link from an event to itself"
        if reason:
            dropped.append({**link.model_dump(), "reason": reason})
            continue
        triple = (id_map[str(link.from_event_id)], id_map[str(link.to_event_id)], link.type)
        if triple not in seen:
            seen.add(triple)
            links.append(triple)
    return links, dropped


async def _without_present(s: Any, links: list[Triple]) -> list[Triple]:
    """``links`` minus those stored already (links between skipped events may exist)."""
    present = set()
    for a, b, t in links:
        if (await s.execute(select(L.c.id).where(L.c.from_event_id == a, L.c.to_event_id == b, L.c.type == t))).first():
            present.add((a, b, t))
    return [x for x in links if x not in present]


async def _insert_links(s: Any, links: list[Triple], created_by: str) -> None:
    if links:
        now = datetime.now(UTC)
        await s.execute(
            insert(L),
            [
                {"from_event_id": a, "to_event_id": b, "type": t, "created_at": now, "created_by": created_by}
                for a, b, t in links
            ],
        )


def _parse_and_validate(
    raw: bytes, settings: EventsSettings
) -> tuple[ImportDocument, list[CanonicalEvent], dict[SourceKey, int]]:
    doc = parse_document(raw, settings)
    events, seen_keys = canonical_events(doc)
    return doc, events, seen_keys


async def _check_calendars(ctx: PluginContext, settings: EventsSettings, doc: ImportDocument) -> None:
    """422 when an event targets a calendar that may not be written locally."""
    local = set(settings.local_calendars)
    read_only: set[tuple[str, str]] = set()
    if ctx.has_service(EventIntake):
        read_only = {
            (c["source"], c["calendar_id"]) for c in await ctx.service(EventIntake).calendars() if c["read_only"]
        }
    errors = []
    for i, item in enumerate(doc.events):
        if item.source == LOCAL_SOURCE and item.calendar_id not in local:
            detail = f"not a local (writable) calendar; local calendars: {sorted(local)}"
        elif (item.source, item.calendar_id) in read_only:
            detail = f"calendar {item.calendar_id!r} of source {item.source!r} is read-only"
        else:
            continue
        errors.append(
            {"pointer": f"/events/{i}/calendar_id", "location": "body", "detail": detail, "type": "value_error"}
        )
    if errors:
        summary = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5])
        raise InvalidInput(
            f"The import writes to calendars it may not write: {summary}", type="validation", errors=errors
        )


async def import_document(
    ctx: PluginContext, raw: bytes, *, on_conflict: Literal["fail", "skip"], principal: Principal, origin: Origin | None
) -> dict[str, Any]:
    """Import an export document in one transaction; returns counts, dropped links and the id map.

    Parsing and validation run in a thread (a large document must not stall
    the event loop). The calendar rules of ``POST /api/v1/events`` apply:
    events of the source ``local`` go only to configured local calendars, and
    no event goes to a configured read-only calendar (its source owns it).
    """
    settings = ctx.section(EventsSettings)
    doc, events, seen_keys = await asyncio.to_thread(_parse_and_validate, raw, settings)
    await _check_calendars(ctx, settings, doc)
    store = event_store(ctx)
    async with ctx.db.write() as s:
        existing = await _existing_ids(s, seen_keys)
        if existing and on_conflict == "fail":
            _refuse_conflicts(existing)
        new_events = [e for e in events if e.key not in existing]
        new_ids = await store.insert_many(s, new_events)
        by_key = dict(zip((e.key for e in new_events), new_ids, strict=True))
        id_map = {str(item.id): by_key.get(item.key, existing.get(item.key)) for item in doc.events}
        links, dropped = _resolve_links(doc, id_map)
        if links and existing:
            links = await _without_present(s, links)
        await _insert_links(s, links, principal.key_id)
        result = {
            "imported": len(new_events),
            "skipped": len(events) - len(new_events),
            "links_imported": len(links),
            "dropped_links": dropped,
            "id_map": id_map,
        }
        await record_audit(
            s,
            entity="event",
            action="import",
            entity_id=None,
            change={k: result[k] for k in ("imported", "skipped", "links_imported")} | {"dropped_links": len(dropped)},
            principal=principal,
            origin=origin,
        )
    return result
