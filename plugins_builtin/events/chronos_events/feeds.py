"""ICS feeds any calendar app can subscribe to, and their per-feed tokens.

``GET /api/v1/calendars/{calendar_id}/feed.ics`` and ``GET
/api/v1/calendars/feed.ics`` (every calendar) accept an API key with
``events.read`` *or* ``?token=`` — calendar apps cannot send headers. Tokens
are created per calendar (or for all calendars) by keys with ``events.write``
or ``admin``; only their SHA-256 is stored and the secret is shown once. A
token for all calendars also opens each single calendar's feed. Tokens expire
(``events.feed_token_days``) and die with the API key that created them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from chronos.plugin import Context, Principal, Problem, Public, origin_of, require_scope, setting_maximum

from chronos_events import feed_service

router = APIRouter(tags=["feeds"])
CalendarId = Annotated[str, Path(min_length=1, max_length=200)]
WRITE = require_scope("events.write")
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=2048)]
TokenId = Annotated[str, Path(min_length=1, max_length=32)]


class FeedAccess:
    """Dependency: a valid ``?token=`` for this feed, else a key with ``events.read``.

    Declares :class:`Public` (a token replaces the key) and checks the key
    itself when no token is given, so the kernel's scope walk accepts it.
    """

    async def __call__(
        self,
        request: Request,
        ctx: Context,
        token: Annotated[str | None, Query(max_length=200, description="Per-feed token (instead of a key).")] = None,
        _public: None = Depends(Public("ICS feeds accept a per-feed ?token= in place of an API key")),
    ) -> str:
        if token is None:
            principal = await require_scope("events.read")(request)
            return principal.key_id
        holder = await feed_service.token_holder(ctx, token, request.path_params.get("calendar_id"))
        if holder is None:
            raise Problem(401, "The feed token is unknown, revoked or for another calendar", type="unauthorized")
        return holder


def _feed_response(calendar_id: str | None, body: AsyncIterator[bytes]) -> StreamingResponse:
    # Header values are Latin-1: an ASCII fallback name plus the RFC 5987 UTF-8 form.
    raw_name = calendar_id or "all"
    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", raw_name)[:100] or "calendar"
    disposition = f"inline; filename=\"{ascii_name}.ics\"; filename*=UTF-8''{quote(raw_name, safe='')}.ics"
    return StreamingResponse(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": disposition, "Cache-Control": "private, max-age=60"},
    )


Series = Annotated[
    bool | None,
    Query(
        description="Publish recurring series as series (RRULE, EXDATE, overrides with RECURRENCE-ID) instead of"
        " expanded instances (default: events.feed_series)."
    ),
]


class CalendarOut(BaseModel):
    id: str = Field(description="The calendar's id.")
    source: str = Field(description="The source serving it (ics, local …).")
    name: str
    configured: bool = Field(description="False: not configured any more, but events are stored.")
    read_only: bool
    last_sync_at: str | None = Field(description="End of the last successful sync (UTC).")
    last_sync_status: str | None = Field(description="Outcome of the last sync run.")
    last_error: str | None
    event_count: int
    feed_url: str = Field(description="Its ICS feed (a key with events.read, or ?token=).")


class CalendarList(BaseModel):
    items: list[CalendarOut]


@router.get(
    "/calendars",
    response_model=CalendarList,
    summary="Calendars: configured ones and those with stored events, with last sync and event count",
)
async def list_calendars(ctx: Context, _p: Principal = Depends(require_scope("events.read"))) -> dict[str, Any]:
    return await feed_service.list_calendars(ctx)


ICS_RESPONSE = {
    200: {"description": "An iCalendar (RFC 5545) feed", "content": {"text/calendar": {"schema": {"type": "string"}}}},
    404: {"description": "No such calendar (neither configured nor holding events)"},
}


@router.get(
    "/calendars/feed.ics",
    summary="ICS feed of every calendar (key or ?token=)",
    response_class=StreamingResponse,
    responses=ICS_RESPONSE,
)
async def feed_all(ctx: Context, series: Series = None, _who: str = Depends(FeedAccess())) -> StreamingResponse:
    return _feed_response(None, await feed_service.feed(ctx, None, series))


@router.get(
    "/calendars/{calendar_id}/feed.ics",
    summary="ICS feed of one calendar (key or ?token=)",
    response_class=StreamingResponse,
    responses=ICS_RESPONSE,
)
async def feed_one(
    calendar_id: CalendarId, ctx: Context, series: Series = None, _who: str = Depends(FeedAccess())
) -> StreamingResponse:
    """404 for a calendar that is neither configured nor holds events."""
    return _feed_response(calendar_id, await feed_service.feed(ctx, calendar_id, series))


# -- tokens -------------------------------------------------------------------------------


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200, description="What the token is for (e.g. the subscribing app).")
    expires_in_days: int | None = Field(
        None,
        ge=1,
        le=36500,
        description="Life of the token in days (default events.feed_token_days, at most events.feed_token_max_days).",
        json_schema_extra=setting_maximum("events.feed_token_max_days"),
    )


@router.post("/calendars/feed-tokens", status_code=201, summary="Create a token for the feed of every calendar")
async def create_all_token(
    request: Request, ctx: Context, body: TokenCreate | None = None, principal: Principal = Depends(WRITE)
) -> JSONResponse:
    body = body or TokenCreate()
    created = await feed_service.create_token(
        ctx, None, body.name, expires_in_days=body.expires_in_days, principal=principal, origin=origin_of(request)
    )
    return JSONResponse(created, status_code=201)


@router.get("/calendars/feed-tokens", summary="Tokens of the feed of every calendar")
async def list_all_tokens(
    ctx: Context, limit: Limit = 100, cursor: Cursor = None, _p: Principal = Depends(WRITE)
) -> JSONResponse:
    return JSONResponse(await feed_service.list_tokens(ctx, None, limit, cursor))


@router.delete(
    "/calendars/feed-tokens/{token_id}", status_code=204, summary="Revoke a token of the feed of every calendar"
)
async def revoke_all_token(
    token_id: TokenId, request: Request, ctx: Context, principal: Principal = Depends(WRITE)
) -> Response:
    await feed_service.revoke_token(ctx, None, token_id, principal=principal, origin=origin_of(request))
    return Response(status_code=204)


@router.post("/calendars/{calendar_id}/feed-tokens", status_code=201, summary="Create a token for one calendar's feed")
async def create_token(
    calendar_id: CalendarId,
    request: Request,
    ctx: Context,
    body: TokenCreate | None = None,
    principal: Principal = Depends(WRITE),
) -> JSONResponse:
    body = body or TokenCreate()
    created = await feed_service.create_token(
        ctx,
        calendar_id,
        body.name,
        expires_in_days=body.expires_in_days,
        principal=principal,
        origin=origin_of(request),
    )
    return JSONResponse(created, status_code=201)


@router.get("/calendars/{calendar_id}/feed-tokens", summary="Tokens of one calendar's feed")
async def list_tokens(
    calendar_id: CalendarId, ctx: Context, limit: Limit = 100, cursor: Cursor = None, _p: Principal = Depends(WRITE)
) -> JSONResponse:
    return JSONResponse(await feed_service.list_tokens(ctx, calendar_id, limit, cursor))


@router.delete(
    "/calendars/{calendar_id}/feed-tokens/{token_id}", status_code=204, summary="Revoke a token of one calendar's feed"
)
async def revoke_token(
    calendar_id: CalendarId, token_id: TokenId, request: Request, ctx: Context, principal: Principal = Depends(WRITE)
) -> Response:
    await feed_service.revoke_token(ctx, calendar_id, token_id, principal=principal, origin=origin_of(request))
    return Response(status_code=204)
