"""Routes of the export and import of events and links (see :mod:`chronos_events.transfer_service`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import StringConstraints

from chronos.plugin import Context, Principal, TooLarge, origin_of, raw_json_body, require_scope

from chronos_events import transfer_service
from chronos_events.settings import EventsSettings

router = APIRouter(tags=["events"])


@router.get(
    "/events/export",
    summary="Export events and links (streamed JSON)",
    responses={
        200: {
            # The same document POST /events/import takes (its schema is registered by that route).
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ImportDocument"}}},
            "description": "The export document (format version 1).",
        }
    },
)
async def export_events(
    ctx: Context,
    calendar_id: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=200)]], Query(max_length=100)
    ] = [],  # noqa: B006
    _p: Principal = Depends(require_scope("events.read")),
) -> StreamingResponse:
    return StreamingResponse(
        transfer_service.export_document(ctx, calendar_id),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="chronos-events.json"'},
    )


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes."""
    too_large = f"The import exceeds {limit} bytes (events.import_max_bytes)"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(too_large, type=transfer_service.TOO_LARGE)
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > limit:
            raise TooLarge(too_large, type=transfer_service.TOO_LARGE)
    return bytes(data)


@router.post(
    "/events/import",
    summary="Import an export document (all or nothing)",
    # The body is read here (bounded by events.import_max_bytes) and parsed in a thread.
    openapi_extra=raw_json_body(transfer_service.ImportDocument, "A document as GET /events/export writes it"),
    responses={409: {"description": "An event's source key exists already (on_conflict=fail)"}},
)
async def import_events(
    request: Request,
    ctx: Context,
    on_conflict: Annotated[
        Literal["fail", "skip"],
        Query(description="An event whose source key exists already: fail the import (409) or keep the stored one."),
    ] = "fail",
    principal: Principal = Depends(require_scope("events.write")),
) -> JSONResponse:
    raw = await _read_limited(request, ctx.section(EventsSettings).import_max_bytes)
    result = await transfer_service.import_document(
        ctx, raw, on_conflict=on_conflict, principal=principal, origin=origin_of(request)
    )
    return JSONResponse(result)
