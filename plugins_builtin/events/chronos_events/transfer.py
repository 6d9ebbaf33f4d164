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

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import insert, select

from chronos.plugin import CanonicalEvent, EventStore, Principal, Problem, SubTask, record_audit, require_scope, origin_of

from chronos_events.models import EventLink
from chronos_events.query import COLUMNS, iso_z, row_to_item
from chronos_events.router import validation_problem
from chronos_events.store import T
from chronos_events.settings import EventsSettings

FORMAT = "chronos-events"
VERSION = 1
PAGE = 1000
EXPORT_DROP = ("all_done", "content_hash")

router = APIRouter(tags=["events"])
L = EventLink.__table__


def _ctx(request: Request) -> Any:
    return request.app.state.chronos


@router.get(
    "/events/export",
    summary="Export events and links (streamed JSON)",
    responses={200: {"content": {"application/json": {}}, "description": "The export document (format version 1)."}},
)
async def export_events(
    request: Request,
    calendar_id: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=200)]], Query(max_length=100)] = [],  # noqa: B006
    _p: Principal = Depends(require_scope("events.read")),
) -> StreamingResponse:
    ctx = _ctx(request)
    calendars = sorted(set(calendar_id))

    async def body() -> AsyncIterator[bytes]:
        head = {"format": FORMAT, "version": VERSION, "exported_at": iso_z(datetime.now(UTC))}
        yield (json.dumps(head)[:-1] + ', "events": [').encode()
        async with ctx.db.read() as s:
            if ctx.db.dialect == "postgresql":
                # One snapshot for every page, so links match the events exported.
                await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            last = 0
            first = True
            while True:
                stmt = select(T).where(T.c.id > last)
                if calendars:
                    stmt = stmt.where(T.c.calendar_id.in_(calendars))
                rows = (await s.execute(stmt.order_by(T.c.id).limit(PAGE))).all()
                if not rows:
                    break
                chunk = []
                for r in rows:
                    m = r._mapping
                    item = row_to_item([m[c.strip()] for c in COLUMNS.split(",")])
                    for k in EXPORT_DROP:
                        item.pop(k, None)
                    chunk.append(json.dumps(item, ensure_ascii=False))
                yield (("" if first else ",") + ",".join(chunk)).encode()
                first = False
                last = rows[-1].id
            yield b'], "links": ['
            last = 0
            first = True
            while True:
                stmt = select(L.c.id, L.c.from_event_id, L.c.to_event_id, L.c.type).where(L.c.id > last)
                if calendars:
                    ids = select(T.c.id).where(T.c.calendar_id.in_(calendars))
                    stmt = stmt.where(L.c.from_event_id.in_(ids), L.c.to_event_id.in_(ids))
                rows = (await s.execute(stmt.order_by(L.c.id).limit(PAGE))).all()
                if not rows:
                    break
                chunk = [json.dumps({"from_event_id": r.from_event_id, "to_event_id": r.to_event_id, "type": r.type}) for r in rows]
                yield (("" if first else ",") + ",".join(chunk)).encode()
                first = False
                last = rows[-1].id
        yield b"]}"

    return StreamingResponse(
        body(),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="chronos-events.json"'},
    )


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
    mode: Literal["free", "auto-plan"] = "free"
    tags: list[str] = Field(default_factory=list)
    sub_tasks: list[SubTask] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


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


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"The import exceeds {limit} bytes (events.import_max_bytes)")
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > limit:
            raise Problem(413, f"The import exceeds {limit} bytes (events.import_max_bytes)")
    return bytes(data)


@router.post("/events/import", summary="Import an export document (all or nothing)")
async def import_events(
    request: Request,
    on_conflict: Annotated[
        Literal["fail", "skip"],
        Query(description="An event whose source key exists already: fail the import (409) or keep the stored one."),
    ] = "fail",
    principal: Principal = Depends(require_scope("events.write")),
) -> JSONResponse:
    ctx = _ctx(request)
    settings = ctx.section(EventsSettings)
    raw = await _read_limited(request, settings.import_max_bytes)
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "The request body is not valid JSON", type="malformed-body") from None
    if isinstance(payload, dict) and isinstance(payload.get("events"), list) and len(payload["events"]) > settings.import_max_events:
        raise Problem(413, f"An import may hold at most {settings.import_max_events} events (events.import_max_events)")
    try:
        doc = ImportDocument.model_validate(payload)
    except ValidationError as exc:
        raise validation_problem(exc) from None

    events: list[CanonicalEvent] = []
    seen_ids: dict[int, int] = {}
    seen_keys: dict[tuple[str, str, str, str], int] = {}
    errors = []
    for i, item in enumerate(doc.events):
        if item.id in seen_ids:
            errors.append({"pointer": f"/events/{i}/id", "location": "body", "detail": f"duplicate id (also /events/{seen_ids[item.id]})", "type": "value_error"})
            continue
        seen_ids[item.id] = i
        try:
            event = CanonicalEvent.model_validate(item.model_dump(exclude={"id"}))
        except ValidationError as exc:
            raise validation_problem(exc, prefix=f"/events/{i}") from None
        if event.key in seen_keys:
            errors.append({"pointer": f"/events/{i}/uid", "location": "body", "detail": f"duplicate source key (also /events/{seen_keys[event.key]})", "type": "value_error"})
            continue
        seen_keys[event.key] = i
        events.append(event)
    if errors:
        summary = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5])
        raise Problem(422, f"The import is invalid: {summary}", type="validation", errors=errors)

    store = ctx.service(EventStore)
    async with ctx.db.write() as s:
        existing: dict[tuple[str, str, str, str], int] = {}
        groups: dict[tuple[str, str], set[str]] = {}
        for key in seen_keys:
            groups.setdefault((key[0], key[1]), set()).add(key[2])
        for (source, calendar_id), uid_set in groups.items():
            uids = sorted(uid_set)
            for start in range(0, len(uids), 400):
                stmt = select(T.c.id, T.c.source, T.c.calendar_id, T.c.uid, T.c.recurrence_id).where(
                    T.c.source == source, T.c.calendar_id == calendar_id, T.c.uid.in_(uids[start : start + 400])
                )
                for r in (await s.execute(stmt)).all():
                    key = (r.source, r.calendar_id, r.uid, r.recurrence_id)
                    if key in seen_keys:
                        existing[key] = r.id
        if existing and on_conflict == "fail":
            sample = [{"source": k[0], "calendar_id": k[1], "uid": k[2], "recurrence_id": k[3], "id": v}
                      for k, v in list(existing.items())[:20]]
            raise Problem(
                409,
                f"{len(existing)} event(s) of the import exist already; nothing was imported"
                " (use on_conflict=skip to keep the stored ones)",
                type="conflict",
                conflicts=sample,
            )
        new_events = [e for e in events if e.key not in existing]
        new_ids = await store.insert_many(s, new_events)
        by_key = dict(zip((e.key for e in new_events), new_ids, strict=True))
        id_map: dict[str, int] = {}
        for item in doc.events:
            key = (item.source, item.calendar_id, item.uid, item.recurrence_id)
            id_map[str(item.id)] = by_key.get(key, existing.get(key))  # type: ignore[arg-type]
        links, dropped = [], []
        seen_links = set()
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
            if triple in seen_links:
                continue
            seen_links.add(triple)
            links.append(triple)
        if links and existing:
            # Links between skipped events may exist already.
            present = set()
            for a, b, t in links:
                if (await s.execute(select(L.c.id).where(L.c.from_event_id == a, L.c.to_event_id == b, L.c.type == t))).first():
                    present.add((a, b, t))
            links = [x for x in links if x not in present]
        if links:
            now = datetime.now(UTC)
            await s.execute(
                insert(L),
                [{"from_event_id": a, "to_event_id": b, "type": t, "created_at": now, "created_by": principal.key_id}
                 for a, b, t in links],
            )
        result = {
            "imported": len(new_events),
            "skipped": len(events) - len(new_events),
            "links_imported": len(links),
            "dropped_links": dropped,
            "id_map": id_map,
        }
        await record_audit(
            s, entity="event", action="import", entity_id=None,
            change={k: result[k] for k in ("imported", "skipped", "links_imported")} | {"dropped_links": len(dropped)},
            principal=principal, origin=origin_of(request),
        )
    return JSONResponse(result)
