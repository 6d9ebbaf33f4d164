"""The event API: list and search, single events, creation through the pipeline, links."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import delete, insert, or_, select
from sqlalchemy.engine import make_url

from chronos.plugin import (
    PluginContext,
    Resource,
    EventDraft,
    EventIntake,
    EventKey,
    EventStore,
    Principal,
    Problem,
    decode_cursor,
    encode_cursor,
    record_audit,
    require_scope,
    origin_of,
)

from chronos_events.models import EventLink
from chronos_events.query import EventQuery, iso_z, row_to_item
from chronos_events.query import list_events as run_list
from chronos_events.query import InlineReader, list_page_sqlite
from chronos_events.store import PATCHABLE, SqlEventStore, UnknownSubTask
from chronos_events.settings import EventsSettings

MAX_ID = 2**63 - 1
EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="The event's id.")]
Text200 = Annotated[str, StringConstraints(min_length=1, max_length=200)]
LinkType = Literal["blocks", "relates", "follows"]
LOCAL_SOURCE = "local"

router = APIRouter(tags=["events"])
READ = require_scope("events.read")
WRITE = require_scope("events.write")


def _ctx(request: Request) -> Any:
    return request.app.state.chronos


def _open_inline_reader(ctx: PluginContext) -> InlineReader | None:
    path = make_url(ctx.db.url).database
    budget = ctx.section(EventsSettings).inline_read_budget_ms
    if ctx.db.is_sqlite and budget > 0 and path and path != ":memory:" and not path.startswith("file:"):
        try:
            return InlineReader(path, budget)
        except Exception:  # noqa: BLE001 - the threaded path always works
            return None
    return None


def _close_inline_reader(reader: InlineReader | None) -> None:
    if reader is not None:
        reader.close()


#: The process's inline SQLite reader (see :class:`InlineReader`); None for other databases.
INLINE_READER: Resource[InlineReader | None] = Resource(
    "events.inline_reader", _open_inline_reader, close=_close_inline_reader
)


def inline_reader(ctx: PluginContext) -> InlineReader | None:
    return ctx.resource(INLINE_READER)


def _store(request: Request) -> SqlEventStore:
    return _ctx(request).service(EventStore)


def validation_problem(exc: ValidationError, prefix: str = "") -> Problem:
    errors = [
        {
            "pointer": prefix + "".join(f"/{p}" for p in err["loc"]),
            "location": "body",
            "detail": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors()
    ]
    summary = "; ".join(f"{e['pointer'] or '/'}: {e['detail']}" for e in errors[:5])
    return Problem(422, f"The request is invalid: {summary}", type="validation", errors=errors)


async def _event_row(session: Any, store: SqlEventStore, event_id: int) -> Any:
    row = await store.row(session, event_id)
    if row is None:
        raise Problem(404, f"No event with id {event_id}", type="not-found")
    return row


def stored_item(row: Any) -> dict[str, Any]:
    """A row from ``select(events)`` as the API's JSON object."""
    m = row._mapping
    return row_to_item([m[c.strip()] for c in _COLUMN_NAMES])


_COLUMN_NAMES = (
    "id source calendar_id uid recurrence_id title description location start_utc end_utc all_day start_date"
    " end_date timezone status transparency mode tags sub_tasks all_done metadata content_hash created_at updated_at"
).split()


# -- list ---------------------------------------------------------------------------


# The list route parses its query string itself: it is the hot path, and
# FastAPI's per-parameter validation cost more than the query on a small
# machine. The parameters are documented for OpenAPI by hand below; errors
# keep the usual 422 shape with a pointer per parameter.
LIST_PARAMETERS = [
    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"},
     "description": "Window start, ISO 8601 with offset (overlap: events ending after it)."},
    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"},
     "description": "Window end, exclusive, ISO 8601 with offset (events starting before it)."},
    {"name": "calendar_id", "in": "query", "schema": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 100},
     "style": "form", "explode": True, "description": "Repeatable."},
    {"name": "direction", "in": "query", "schema": {"type": "string", "enum": ["future", "past", "all"]},
     "description": "future: not ended at `from`/now; past: started before `to`/`from`/now, newest first; all: the window."},
    {"name": "text", "in": "query", "schema": {"type": "string", "maxLength": 500},
     "description": 'Full-text over title, description, location; "a phrase", prefix*.'},
    {"name": "include_completed", "in": "query", "schema": {"type": "boolean", "default": True}},
    {"name": "tag", "in": "query", "schema": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 20},
     "style": "form", "explode": True, "description": "Repeatable; every tag must be present."},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
    {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 2048}},
    {"name": "analytics", "in": "query", "schema": {"type": "boolean", "default": False},
     "description": "Add counts per calendar, day and tag and busy minutes over every match."},
]

_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


def parse_list_query(params: Any, now: datetime | None = None) -> tuple[EventQuery, bool]:
    """Validate the query string of ``GET /api/v1/events`` (422 with pointers on errors)."""
    errors: list[dict[str, Any]] = []

    def err(name: str, detail: str, kind: str = "value_error") -> None:
        errors.append({"pointer": f"/query/{name}", "location": "query", "detail": detail, "type": kind})

    def instant(name: str) -> datetime | None:
        raw = params.get(name)
        if raw is None:
            return None
        try:
            value = datetime.fromisoformat(raw.strip())
        except ValueError:
            err(name, "not an ISO 8601 date-time (e.g. 2030-03-04T09:00:00Z)", "datetime_parsing")
            return None
        if value.tzinfo is None:
            err(name, "needs a UTC offset or Z (e.g. 2030-03-04T09:00:00+01:00)", "timezone_aware")
            return None
        try:
            value.astimezone(UTC)
        except OverflowError:
            err(name, "out of range: in UTC it must fall in the years 1 to 9999")
            return None
        return value

    def flag(name: str, default: bool) -> bool:
        raw = params.get(name)
        if raw is None:
            return default
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        err(name, "not a boolean (true or false)", "bool_parsing")
        return default

    def many(name: str, most: int) -> list[str]:
        values = params.getlist(name)
        if len(values) > most:
            err(name, f"at most {most} values")
        for i, v in enumerate(values):
            if not 1 <= len(v) <= 200:
                errors.append({"pointer": f"/query/{name}/{i}", "location": "query",
                               "detail": "must be 1 to 200 characters", "type": "string_too_long"})
        return values

    start, end = instant("from"), instant("to")
    calendars = many("calendar_id", 100)
    tags = many("tag", 20)
    direction = params.get("direction")
    if direction is not None and direction not in ("future", "past", "all"):
        err("direction", "must be one of future, past, all", "literal_error")
        direction = None
    text = params.get("text")
    if text is not None and len(text) > 500:
        err("text", "at most 500 characters", "string_too_long")
    limit = 50
    raw_limit = params.get("limit")
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            err("limit", "not an integer", "int_parsing")
        else:
            if not 1 <= limit <= 500:
                err("limit", "must be between 1 and 500", "less_than_equal" if limit > 500 else "greater_than_equal")
    cursor = params.get("cursor")
    if cursor is not None and len(cursor) > 2048:
        err("cursor", "at most 2048 characters", "string_too_long")
    include_completed = flag("include_completed", True)
    analytics = flag("analytics", False)
    if errors:
        summary = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5])
        raise Problem(422, f"The request is invalid: {summary}", type="validation", errors=errors)
    q = EventQuery(start=start, end=end, calendars=calendars, direction=direction, text=text,  # type: ignore[arg-type]
                   include_completed=include_completed, tags=tags, limit=limit, cursor=cursor,
                   **({"now": now} if now else {}))
    return q, analytics


@router.get(
    "/events",
    summary="List and search events",
    openapi_extra={"parameters": LIST_PARAMETERS},
    responses={200: {"description": '`{"items": [...], "next_cursor": str | null, "analytics"?: {...}}`'}},
)
async def list_events(request: Request, _p: Principal = Depends(READ)) -> Response:
    """Events overlapping ``[from, to)``, sorted by start then id (descending for ``past``).

    ``direction``: ``future`` (default without a window) = not yet ended at
    ``from`` or now; ``past`` = started before ``to``/``from``/now, newest
    first; ``all`` (default with a window) = just the window.
    """
    q, analytics = parse_list_query(request.query_params)
    ctx = _ctx(request)
    if ctx.db.is_sqlite and not analytics:
        body = await list_page_sqlite(ctx.db.reader, q, inline_reader(ctx))
        return Response(body, media_type="application/json")
    async with ctx.db.read() as s:
        body = await run_list(s, ctx.db.dialect, q, analytics=analytics)
    return JSONResponse(body)


# -- create through the pipeline --------------------------------------------------------------


class EventCreate(BaseModel):
    """A new event in a local calendar; it runs through the sync pipeline."""

    model_config = ConfigDict(extra="forbid")

    calendar_id: Text200 | None = Field(None, description="A local calendar (default: the first configured).")
    title: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    description: str = Field("", max_length=100_000)
    location: str = Field("", max_length=2000)
    start: AwareDatetime | date = Field(description="ISO 8601 with offset, or a date for an all-day event.")
    end: AwareDatetime | date | None = Field(None, description="Exclusive; default from the normalisers.")
    timezone: str | None = Field(None, max_length=64, description="Original time zone (IANA name).")
    status: Literal["confirmed", "tentative", "cancelled"] = "confirmed"
    transparency: Literal["busy", "free"] = "busy"
    mode: Literal["free", "auto-plan"] = "free"
    tags: list[Text200] = Field(default_factory=list, max_length=50)
    metadata: dict[str, Any] = Field(default_factory=dict)


@router.post("/events", status_code=201, summary="Create an event in a local calendar (through the pipeline)",
             responses={200: {"description": "A repeat with the same Idempotency-Key: the event created before"}})
async def create_event(
    body: EventCreate,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    principal: Principal = Depends(WRITE),
) -> Any:
    ctx = _ctx(request)
    settings = ctx.section(EventsSettings)
    calendar_id = body.calendar_id or settings.local_calendars[0]
    if calendar_id not in settings.local_calendars:
        raise Problem(
            422,
            f"Calendar {calendar_id!r} is not a local (writable) calendar; local calendars: {settings.local_calendars}",
            type="validation",
            errors=[{"pointer": "/calendar_id", "location": "body", "detail": "not a local calendar", "type": "value_error"}],
        )
    if isinstance(body.start, datetime) != isinstance(body.end, datetime) and body.end is not None:
        raise Problem(
            422,
            "start and end must both be datetimes or both be dates",
            type="validation",
            errors=[{"pointer": "/end", "location": "body", "detail": "type differs from start", "type": "value_error"}],
        )
    if body.end is not None and body.end <= body.start:  # type: ignore[operator]
        raise Problem(
            422,
            "end must be after start",
            type="validation",
            errors=[{"pointer": "/end", "location": "body", "detail": "must be after start", "type": "value_error"}],
        )
    try:
        intake = ctx.service(EventIntake)
    except LookupError:
        raise Problem(503, "The sync pipeline is unavailable, so events cannot be created", type="pipeline-unavailable") from None
    store = _store(request)
    if idempotency_key:
        # A retry with the same key maps onto the same source key: the pipeline
        # sees an unchanged entry (or a tombstone, if it was consumed).
        digest = hashlib.sha256(f"{principal.key_id}\x00{idempotency_key}".encode()).hexdigest()[:32]
        uid = f"api-{digest}@chronos"
        async with ctx.db.read() as s:
            existing = await store.get_by_key(s, EventKey(LOCAL_SOURCE, calendar_id, uid, ""))
        if existing is not None:
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
            async with ctx.db.read() as s:
                return stored_item(await _event_row(s, store, existing.id))
    else:
        uid = f"api-{uuid.uuid4().hex}@chronos"
    draft = EventDraft(
        uid=uid,
        start=body.start,
        end=body.end,
        title=body.title,
        description=body.description,
        location=body.location,
        timezone=body.timezone,
        status=body.status,
        transparency=body.transparency,
        mode=body.mode,
        tags=list(body.tags),
        metadata=dict(body.metadata),
        source=LOCAL_SOURCE,
        calendar_id=calendar_id,
    )
    stored = await intake.ingest(LOCAL_SOURCE, calendar_id, [draft], actor=principal.key_id)
    if not stored:
        async with ctx.db.read() as s:
            again = await store.get_by_key(s, EventKey(LOCAL_SOURCE, calendar_id, uid, ""))
        if again is None:
            # Consumed by a sink (an ``ACTION:`` entry became a command) or rejected.
            response.status_code = 202
            return {"status": "consumed", "source": LOCAL_SOURCE, "calendar_id": calendar_id, "uid": uid}
        stored = [again]
    async with ctx.db.read() as s:
        row = await _event_row(s, store, stored[0].id)
    response.headers["Location"] = f"/api/v1/events/{row.id}"
    return stored_item(row)


# -- one event ----------------------------------------------------------------------------


@router.get("/events/{event_id:int}", summary="One event")
async def get_event(event_id: EventId, request: Request, _p: Principal = Depends(READ)) -> JSONResponse:
    async with _ctx(request).db.read() as s:
        row = await _event_row(s, _store(request), event_id)
    return JSONResponse(stored_item(row))


class SubTaskDone(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    done: bool


class EventPatch(BaseModel):
    """Fields to change; ``sub_tasks`` sets done flags by id; ``metadata`` is merged (null removes a key).

    Changing ``title``, ``description`` or ``location`` runs the event through
    the enrichers again, as on creation: ``#tags``, keyword labels and the
    checklist follow the new text. Items still on the checklist keep their
    done flags unless the new text changes their box. Tags the old text
    implied are replaced by those the new text implies; other tags stay.
    ``tags``, ``sub_tasks`` and ``metadata`` given in the same request win
    over what is derived (``tags`` are then stored exactly as given).
    Normalisers and sinks do not run: an edited ``ACTION:``/``NOTIZ:`` title
    gets its ``command_hint`` but is not consumed.
    """

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, max_length=2000)
    description: str | None = Field(None, max_length=100_000)
    location: str | None = Field(None, max_length=2000)
    start_utc: AwareDatetime | None = None
    end_utc: AwareDatetime | None = None
    all_day: bool | None = None
    start_date: date | None = None
    end_date: date | None = None
    timezone: str | None = Field(None, max_length=64)
    status: Literal["confirmed", "tentative", "cancelled"] | None = None
    transparency: Literal["busy", "free"] | None = None
    mode: Literal["free", "auto-plan"] | None = None
    tags: list[Text200] | None = Field(None, max_length=50)
    sub_tasks: list[SubTaskDone] | None = Field(None, max_length=500)
    metadata: dict[str, Any] | None = None


NULLABLE = {"start_date", "end_date", "timezone"}


@router.patch("/events/{event_id:int}", summary="Change an event (fields, sub-task done flags, metadata)")
async def patch_event(
    event_id: EventId, body: EventPatch, request: Request, principal: Principal = Depends(WRITE)
) -> JSONResponse:
    given = body.model_fields_set
    for name in given:
        if getattr(body, name) is None and name not in NULLABLE:
            raise Problem(
                422,
                f"{name} cannot be null",
                type="validation",
                errors=[{"pointer": f"/{name}", "location": "body", "detail": "must not be null", "type": "value_error"}],
            )
    fields = {k: getattr(body, k) for k in given if k in PATCHABLE and k != "sub_tasks"}
    ctx = _ctx(request)
    store = _store(request)
    done = {item.id: item.done for item in body.sub_tasks or []}
    async with ctx.db.write() as s:
        row = await _event_row(s, store, event_id)
        all_day = fields.get("all_day", row._mapping["all_day"])
        if all_day and ("start_date" in fields or "end_date" in fields):
            # All-day events span whole UTC days: derive the instants from the dates.
            if "start_date" in fields and fields["start_date"] is not None and "start_utc" not in fields:
                fields["start_utc"] = datetime.combine(fields["start_date"], time(), UTC)
            if "end_date" in fields and fields["end_date"] is not None and "end_utc" not in fields:
                fields["end_utc"] = datetime.combine(fields["end_date"], time(), UTC)
        try:
            stored, previous = await store.patch(s, row, fields=fields, sub_tasks_done=done, metadata=body.metadata)
        except ValidationError as exc:
            raise Problem(
                422,
                "The change would make the event invalid: " + "; ".join(e["msg"] for e in exc.errors()[:3]),
                type="validation",
                errors=[{"pointer": "/" + "/".join(map(str, e["loc"])) if e["loc"] else "", "location": "body",
                         "detail": e["msg"], "type": e["type"]} for e in exc.errors()],
            ) from None
        except UnknownSubTask as exc:
            # Checked against the sub-tasks after the edit (a new description has new ones).
            i = next(i for i, item in enumerate(body.sub_tasks or []) if item.id == exc.task_id)
            raise Problem(
                422,
                f"The event has no sub-task {exc.task_id!r}",
                type="validation",
                errors=[{"pointer": f"/sub_tasks/{i}/id", "location": "body", "detail": "unknown sub-task", "type": "value_error"}],
            ) from None
        change = body.model_dump(mode="json", exclude_unset=True)
        await record_audit(s, entity="event", action="update", entity_id=event_id, change=change,
                           principal=principal, origin=origin_of(request))
        new_row = await store.row(s, event_id)
    return JSONResponse(stored_item(new_row))


@router.delete("/events/{event_id:int}", status_code=204, summary="Delete an event (locally)")
async def delete_event(
    event_id: EventId,
    request: Request,
    tombstone: Annotated[bool | None, Query(description="Hide the source key from later syncs (default: true unless the event is local).")] = None,
    principal: Principal = Depends(WRITE),
) -> Response:
    """Deletes the stored event and its links. Nothing is written back to the source:
    for synced events a tombstone keeps the next sync from bringing the entry back."""
    ctx = _ctx(request)
    store = _store(request)
    async with ctx.db.write() as s:
        row = await _event_row(s, store, event_id)
        hide = tombstone if tombstone is not None else row.source != LOCAL_SOURCE
        await store.remove(s, event_id, tombstone=hide, reason="deleted through the API")
        await record_audit(
            s, entity="event", action="delete", entity_id=event_id,
            change={"source": row.source, "calendar_id": row.calendar_id, "uid": row.uid,
                    "recurrence_id": row.recurrence_id, "title": row.title, "tombstone": hide},
            principal=principal, origin=origin_of(request),
        )
    return Response(status_code=204)


# -- links --------------------------------------------------------------------------------


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_event_id: int = Field(ge=1, le=MAX_ID)
    type: LinkType


def link_item(row: Any, event_id: int) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "from_event_id": row.from_event_id,
        "to_event_id": row.to_event_id,
        "direction": "outgoing" if row.from_event_id == event_id else "incoming",
        "created_at": iso_z(row.created_at),
    }


L = EventLink.__table__


@router.post("/events/{event_id:int}/links", status_code=201, summary="Link this event to another")
async def create_link(
    event_id: EventId, body: LinkCreate, request: Request, principal: Principal = Depends(WRITE)
) -> JSONResponse:
    if body.to_event_id == event_id:
        raise Problem(
            422,
            "An event cannot link to itself",
            type="validation",
            errors=[{"pointer": "/to_event_id", "location": "body", "detail": "equals the event's own id", "type": "value_error"}],
        )
    ctx = _ctx(request)
    store = _store(request)
    async with ctx.db.write() as s:
        await _event_row(s, store, event_id)
        if await store.row(s, body.to_event_id) is None:
            raise Problem(422, f"No event with id {body.to_event_id}", type="validation",
                          errors=[{"pointer": "/to_event_id", "location": "body", "detail": "no such event", "type": "value_error"}])
        dup = (
            await s.execute(
                select(L.c.id).where(L.c.from_event_id == event_id, L.c.to_event_id == body.to_event_id, L.c.type == body.type)
            )
        ).scalar()
        if dup is not None:
            raise Problem(409, f"This link exists already (id {dup})", type="conflict", link_id=dup)
        new_id = (
            await s.execute(
                insert(L).values(from_event_id=event_id, to_event_id=body.to_event_id, type=body.type,
                                 created_at=datetime.now(UTC), created_by=principal.key_id).returning(L.c.id)
            )
        ).scalar_one()
        await record_audit(s, entity="event_link", action="create", entity_id=new_id,
                           change={"from_event_id": event_id, "to_event_id": body.to_event_id, "type": body.type},
                           principal=principal, origin=origin_of(request))
        row = (await s.execute(select(L).where(L.c.id == new_id))).first()
    return JSONResponse(link_item(row, event_id), status_code=201)


@router.get("/events/{event_id:int}/links", summary="Links from and to this event")
async def list_links(
    event_id: EventId,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    _p: Principal = Depends(READ),
) -> JSONResponse:
    ctx = _ctx(request)
    async with ctx.db.read() as s:
        await _event_row(s, _store(request), event_id)
        stmt = select(L).where(or_(L.c.from_event_id == event_id, L.c.to_event_id == event_id))
        if cursor:
            (after,) = decode_cursor(f"event-links:{event_id}", cursor, [int])
            stmt = stmt.where(L.c.id > after)
        rows = (await s.execute(stmt.order_by(L.c.id).limit(limit + 1))).all()
    items = [link_item(r, event_id) for r in rows[:limit]]
    next_cursor = encode_cursor(f"event-links:{event_id}", [items[-1]["id"]]) if len(rows) > limit else None
    return JSONResponse({"items": items, "next_cursor": next_cursor})


@router.delete("/events/{event_id:int}/links/{link_id}", status_code=204, summary="Remove a link")
async def delete_link(
    event_id: EventId,
    link_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    request: Request,
    principal: Principal = Depends(WRITE),
) -> Response:
    ctx = _ctx(request)
    async with ctx.db.write() as s:
        row = (
            await s.execute(
                select(L).where(L.c.id == link_id, or_(L.c.from_event_id == event_id, L.c.to_event_id == event_id))
            )
        ).first()
        if row is None:
            raise Problem(404, f"Event {event_id} has no link {link_id}", type="not-found")
        await s.execute(delete(L).where(L.c.id == link_id))
        await record_audit(s, entity="event_link", action="delete", entity_id=link_id,
                           change={"from_event_id": row.from_event_id, "to_event_id": row.to_event_id, "type": row.type},
                           principal=principal, origin=origin_of(request))
    return Response(status_code=204)


@router.delete("/events/{event_id:int}/links", status_code=204, summary="Remove the link to another event")
async def delete_link_to(
    event_id: EventId,
    request: Request,
    to: Annotated[int, Query(ge=1, le=MAX_ID, description="The linked event's id.")],
    type: Annotated[LinkType | None, Query(description="Only this type (default: every type).")] = None,  # noqa: A002
    principal: Principal = Depends(WRITE),
) -> Response:
    ctx = _ctx(request)
    async with ctx.db.write() as s:
        cond = [L.c.from_event_id == event_id, L.c.to_event_id == to]
        if type is not None:
            cond.append(L.c.type == type)
        rows = (await s.execute(select(L).where(*cond))).all()
        if not rows:
            raise Problem(404, f"Event {event_id} has no link to event {to}", type="not-found")
        await s.execute(delete(L).where(L.c.id.in_([r.id for r in rows])))
        for r in rows:
            await record_audit(s, entity="event_link", action="delete", entity_id=r.id,
                               change={"from_event_id": r.from_event_id, "to_event_id": r.to_event_id, "type": r.type},
                               principal=principal, origin=origin_of(request))
    return Response(status_code=204)

