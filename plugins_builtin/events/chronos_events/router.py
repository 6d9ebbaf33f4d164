"""The event API: list and search, single events, creation through the pipeline, links."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from chronos.plugin import Context, Principal, origin_of, require_scope

from chronos_events import links, service
from chronos_events.list_params import parse_list_query
from chronos_events.schemas import MAX_ID, EventCreate, EventPatch, LinkCreate, LinkType

EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="The event's id.")]

router = APIRouter(tags=["events"])
READ = require_scope("events.read")
WRITE = require_scope("events.write")


# -- list ---------------------------------------------------------------------------


# The list route parses its query string itself (chronos_events.list_params):
# the parameters are documented for OpenAPI by hand here.
LIST_PARAMETERS = [
    {
        "name": "from",
        "in": "query",
        "schema": {"type": "string", "format": "date-time"},
        "description": "Window start, ISO 8601 with offset (overlap: events ending after it).",
    },
    {
        "name": "to",
        "in": "query",
        "schema": {"type": "string", "format": "date-time"},
        "description": "Window end, exclusive, ISO 8601 with offset (events starting before it).",
    },
    {
        "name": "calendar_id",
        "in": "query",
        "schema": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}, "maxItems": 100},
        "style": "form",
        "explode": True,
        "description": "Repeatable.",
    },
    {
        "name": "direction",
        "in": "query",
        "schema": {"type": "string", "enum": ["future", "past", "all"]},
        "description": "future: not ended at `from`/now; past: started before `to`/`from`/now, newest first; all: the window.",
    },
    {
        "name": "text",
        "in": "query",
        "schema": {"type": "string", "maxLength": 500},
        "description": 'Full-text over title, description, location; "a phrase", prefix*.',
    },
    {"name": "include_completed", "in": "query", "schema": {"type": "boolean", "default": True}},
    {
        "name": "tag",
        "in": "query",
        "schema": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}, "maxItems": 20},
        "style": "form",
        "explode": True,
        "description": "Repeatable; every tag must be present.",
    },
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
    {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 2048}},
    {
        "name": "analytics",
        "in": "query",
        "schema": {"type": "boolean", "default": False},
        "description": "Add counts per calendar, day and tag and busy minutes over every match.",
    },
    {
        "name": "include",
        "in": "query",
        "schema": {"type": "array", "items": {"type": "string", "enum": ["conflicts"]}, "maxItems": 1},
        "style": "form",
        "explode": True,
        "description": "conflicts: each item lists the ids of the events it conflicts with (the planning plugin).",
    },
]


@router.get(
    "/events",
    summary="List and search events",
    openapi_extra={"parameters": LIST_PARAMETERS},
    responses={
        200: {
            "description": '`{"items": [...], "next_cursor": str | null, "analytics"?: {...}}`;'
            " with include=conflicts each item has `conflicts`: [ids]"
        }
    },
)
async def list_events(request: Request, ctx: Context, _p: Principal = Depends(READ)) -> Response:
    """Events overlapping ``[from, to)``, sorted by start then id (descending for ``past``).

    ``direction``: ``future`` (default without a window) = not yet ended at
    ``from`` or now; ``past`` = started before ``to``/``from``/now, newest
    first; ``all`` (default with a window) = just the window.
    """
    q, analytics = parse_list_query(request.query_params)
    include = request.query_params.getlist("include")
    if any(value != "conflicts" for value in include):
        raise service.invalid_query("include", "the only value is conflicts")
    body = await service.list_events(ctx, q, analytics=analytics, conflicts=bool(include))
    if isinstance(body, bytes):
        return Response(body, media_type="application/json")
    return JSONResponse(body)


# -- create through the pipeline --------------------------------------------------------------


@router.post(
    "/events",
    status_code=201,
    summary="Create an event in a local calendar (through the pipeline)",
    responses={200: {"description": "A repeat with the same Idempotency-Key: the event created before"}},
)
async def create_event(
    body: EventCreate,
    ctx: Context,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    principal: Principal = Depends(WRITE),
) -> Any:
    created = await service.create_event(ctx, body, principal=principal, idempotency_key=idempotency_key)
    response.status_code = created.status
    response.headers.update(created.headers)
    return created.body


# -- one event ----------------------------------------------------------------------------


@router.get("/events/{event_id:int}", summary="One event")
async def get_event(event_id: EventId, ctx: Context, _p: Principal = Depends(READ)) -> JSONResponse:
    return JSONResponse(await service.get_event(ctx, event_id))


@router.patch("/events/{event_id:int}", summary="Change an event (fields, sub-task done flags, metadata)")
async def patch_event(
    event_id: EventId, body: EventPatch, request: Request, ctx: Context, principal: Principal = Depends(WRITE)
) -> JSONResponse:
    item = await service.patch_event(ctx, event_id, body, principal=principal, origin=origin_of(request))
    return JSONResponse(item)


@router.delete("/events/{event_id:int}", status_code=204, summary="Delete an event (locally)")
async def delete_event(
    event_id: EventId,
    request: Request,
    ctx: Context,
    tombstone: Annotated[
        bool | None,
        Query(description="Hide the source key from later syncs (default: true unless the event is local)."),
    ] = None,
    principal: Principal = Depends(WRITE),
) -> Response:
    """Deletes the stored event and its links. Nothing is written back to the source:
    for synced events a tombstone keeps the next sync from bringing the entry back."""
    await service.delete_event(ctx, event_id, tombstone=tombstone, principal=principal, origin=origin_of(request))
    return Response(status_code=204)


# -- links --------------------------------------------------------------------------------


@router.post("/events/{event_id:int}/links", status_code=201, summary="Link this event to another")
async def create_link(
    event_id: EventId, body: LinkCreate, request: Request, ctx: Context, principal: Principal = Depends(WRITE)
) -> JSONResponse:
    item = await links.create_link(
        ctx, event_id, body.to_event_id, body.type, principal=principal, origin=origin_of(request)
    )
    return JSONResponse(item, status_code=201)


@router.get("/events/{event_id:int}/links", summary="Links from and to this event")
async def list_links(
    event_id: EventId,
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    _p: Principal = Depends(READ),
) -> JSONResponse:
    return JSONResponse(await links.list_links(ctx, event_id, limit, cursor))


@router.delete("/events/{event_id:int}/links/{link_id}", status_code=204, summary="Remove a link")
async def delete_link(
    event_id: EventId,
    link_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    request: Request,
    ctx: Context,
    principal: Principal = Depends(WRITE),
) -> Response:
    await links.delete_link(ctx, event_id, link_id, principal=principal, origin=origin_of(request))
    return Response(status_code=204)


@router.delete("/events/{event_id:int}/links", status_code=204, summary="Remove the link to another event")
async def delete_link_to(
    event_id: EventId,
    request: Request,
    ctx: Context,
    to: Annotated[int, Query(ge=1, le=MAX_ID, description="The linked event's id.")],
    type: Annotated[LinkType | None, Query(description="Only this type (default: every type).")] = None,  # noqa: A002
    principal: Principal = Depends(WRITE),
) -> Response:
    await links.delete_links_to(ctx, event_id, to, type, principal=principal, origin=origin_of(request))
    return Response(status_code=204)
