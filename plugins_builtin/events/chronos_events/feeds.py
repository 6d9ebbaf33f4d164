"""ICS feeds any calendar app can subscribe to, and their per-feed tokens.

``GET /api/v1/calendars/{calendar_id}/feed.ics`` and ``GET
/api/v1/calendars/feed.ics`` (every calendar) accept an API key with
``events.read`` *or* ``?token=`` — calendar apps cannot send headers. Tokens
are created per calendar (or for all calendars) by keys with ``events.write``
or ``admin``; only their SHA-256 is stored and the secret is shown once. A
token for all calendars also opens each single calendar's feed.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from icalendar import Event as IcsEvent
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert, select, text, update

from chronos.plugin import Principal, Problem, Public, decode_cursor, encode_cursor, record_audit, require_scope, origin_of

from chronos_events.models import FeedToken
from chronos_events.query import EventQuery, QueryBuilder, iso_z
from chronos_events.store import T
from chronos_events.settings import EventsSettings

router = APIRouter(tags=["feeds"])
FT = FeedToken.__table__
TOKEN_PREFIX = "cft_"
PRODID = "-//Chronos Engine//events feed//EN"
CalendarId = Annotated[str, Path(min_length=1, max_length=200)]
FEED_PAGE = 1000


def _ctx(request: Request) -> Any:
    return request.app.state.chronos


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class FeedAccess:
    """Dependency: a valid ``?token=`` for this feed, else a key with ``events.read``.

    Declares :class:`Public` (a token replaces the key) and checks the key
    itself when no token is given, so the kernel's scope walk accepts it.
    """

    async def __call__(
        self,
        request: Request,
        token: Annotated[str | None, Query(max_length=200, description="Per-feed token (instead of a key).")] = None,
        _public: None = Depends(Public("ICS feeds accept a per-feed ?token= in place of an API key")),
    ) -> str:
        calendar_id = request.path_params.get("calendar_id")
        if token is None:
            principal = await require_scope("events.read")(request)
            return principal.key_id
        ctx = _ctx(request)
        digest = hash_token(token)
        async with ctx.db.read() as s:
            row = (await s.execute(select(FT).where(FT.c.token_hash == digest))).first()
        valid = (
            row is not None
            and hmac.compare_digest(row.token_hash, digest)
            and row.revoked_at is None
            and (row.calendar_id is None or row.calendar_id == calendar_id)
        )
        if not valid:
            raise Problem(401, "The feed token is unknown, revoked or for another calendar", type="unauthorized")
        return f"feed-token:{row.id}"


def _vevent(row: Any) -> bytes:
    m = row._mapping
    ev = IcsEvent()
    key = "\x00".join((m["source"], m["calendar_id"], m["uid"], m["recurrence_id"]))
    # Stable per event and instance, unique across calendars in the combined feed.
    ev.add("uid", hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + "@chronos")
    ev.add("dtstamp", m["updated_at"])
    if m["all_day"] and m["start_date"] is not None and m["end_date"] is not None:
        ev.add("dtstart", m["start_date"])
        ev.add("dtend", m["end_date"])
    else:
        ev.add("dtstart", m["start_utc"])
        ev.add("dtend", m["end_utc"])
    ev.add("summary", m["title"])
    if m["description"]:
        ev.add("description", m["description"])
    if m["location"]:
        ev.add("location", m["location"])
    ev.add("status", m["status"].upper())
    ev.add("transp", "TRANSPARENT" if m["transparency"] == "free" else "OPAQUE")
    if m["tags"]:
        ev.add("categories", list(m["tags"]))
    ev.add("created", m["created_at"])
    ev.add("last-modified", m["updated_at"])
    return ev.to_ical()


async def _feed(request: Request, calendar_id: str | None) -> StreamingResponse:
    ctx = _ctx(request)
    settings = ctx.section(EventsSettings)
    now = datetime.now(UTC)
    start = now - timedelta(days=settings.feed_past_days)
    end = now + timedelta(days=settings.feed_future_days)
    builder = QueryBuilder(ctx.db.dialect)
    name = calendar_id or "All calendars"

    async def body() -> AsyncIterator[bytes]:
        yield (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"
            f"PRODID:{PRODID}\r\nCALSCALE:GREGORIAN\r\nMETHOD:PUBLISH\r\n"
            f"X-WR-CALNAME:{_escape(name)}\r\n"
        ).encode()
        cursor = None
        async with ctx.db.read() as s:
            while True:
                q = EventQuery(start=start, end=end, calendars=[calendar_id] if calendar_id else [],
                               direction="all", limit=FEED_PAGE, cursor=cursor, now=now)
                compiled = builder.page(q)
                assert compiled is not None
                ids = [r[0] for r in (await s.execute(text(compiled.sql), compiled.params)).all()]
                page_ids = ids[:FEED_PAGE]
                if page_ids:
                    rows = (await s.execute(select(T).where(T.c.id.in_(page_ids)).order_by(T.c.start_utc, T.c.id))).all()
                    yield b"".join(_vevent(r) for r in rows)
                if len(ids) <= FEED_PAGE:
                    break
                last = rows[-1]._mapping
                cursor = q.next_cursor({"start_utc": iso_z(last["start_utc"]), "id": last["id"]})
        yield b"END:VCALENDAR\r\n"

    # Header values are Latin-1: an ASCII fallback name plus the RFC 5987 UTF-8 form.
    raw_name = calendar_id or "all"
    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", raw_name)[:100] or "calendar"
    disposition = f'inline; filename="{ascii_name}.ics"; filename*=UTF-8\'\'{quote(raw_name, safe="")}.ics'
    return StreamingResponse(
        body(),
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": disposition, "Cache-Control": "private, max-age=60"},
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n").replace("\r", "")


ICS_RESPONSE = {200: {"description": "An iCalendar (RFC 5545) feed", "content": {"text/calendar": {"schema": {"type": "string"}}}}}


@router.get("/calendars/feed.ics", summary="ICS feed of every calendar (key or ?token=)",
            response_class=StreamingResponse, responses=ICS_RESPONSE)
async def feed_all(request: Request, _who: str = Depends(FeedAccess())) -> StreamingResponse:
    return await _feed(request, None)


@router.get("/calendars/{calendar_id}/feed.ics", summary="ICS feed of one calendar (key or ?token=)",
            response_class=StreamingResponse, responses=ICS_RESPONSE)
async def feed_one(calendar_id: CalendarId, request: Request, _who: str = Depends(FeedAccess())) -> StreamingResponse:
    return await _feed(request, calendar_id)


# -- tokens -------------------------------------------------------------------------------


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200, description="What the token is for (e.g. the subscribing app).")


def _token_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "calendar_id": row.calendar_id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": iso_z(row.created_at),
        "revoked_at": iso_z(row.revoked_at),
        "status": "revoked" if row.revoked_at else "active",
    }


async def _create_token(request: Request, principal: Principal, calendar_id: str | None, body: TokenCreate) -> JSONResponse:
    ctx = _ctx(request)
    token_id = "ft_" + secrets.token_hex(6)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(24)
    values = {
        "id": token_id, "calendar_id": calendar_id, "name": body.name, "prefix": secret[:10],
        "token_hash": hash_token(secret), "created_at": datetime.now(UTC), "created_by": principal.key_id,
    }
    async with ctx.db.write() as s:
        await s.execute(insert(FT).values(values))
        await record_audit(s, entity="feed_token", action="create", entity_id=token_id,
                           change={"calendar_id": calendar_id, "name": body.name}, principal=principal, origin=origin_of(request))
        row = (await s.execute(select(FT).where(FT.c.id == token_id))).first()
    path = f"/api/v1/calendars/{calendar_id}/feed.ics" if calendar_id else "/api/v1/calendars/feed.ics"
    return JSONResponse(
        {**_token_view(row), "token": secret, "feed_url": f"{path}?token={secret}"},
        status_code=201,
    )


async def _list_tokens(request: Request, calendar_id: str | None, limit: int, cursor: str | None) -> JSONResponse:
    ctx = _ctx(request)
    kind = f"feed-tokens:{calendar_id or '*'}"
    cond = FT.c.calendar_id.is_(None) if calendar_id is None else FT.c.calendar_id == calendar_id
    stmt = select(FT).where(cond)
    if cursor:
        (after,) = decode_cursor(kind, cursor, [str])
        stmt = stmt.where(FT.c.id > after)
    async with ctx.db.read() as s:
        rows = (await s.execute(stmt.order_by(FT.c.id).limit(limit + 1))).all()
    items = [_token_view(r) for r in rows[:limit]]
    nxt = encode_cursor(kind, [items[-1]["id"]]) if len(rows) > limit else None
    return JSONResponse({"items": items, "next_cursor": nxt})


async def _revoke_token(request: Request, principal: Principal, calendar_id: str | None, token_id: str) -> Response:
    ctx = _ctx(request)
    cond = FT.c.calendar_id.is_(None) if calendar_id is None else FT.c.calendar_id == calendar_id
    async with ctx.db.write() as s:
        row = (await s.execute(select(FT).where(FT.c.id == token_id, cond))).first()
        if row is None:
            raise Problem(404, f"No feed token {token_id!r} for this feed", type="not-found")
        if row.revoked_at is None:
            await s.execute(update(FT).where(FT.c.id == token_id).values(revoked_at=datetime.now(UTC)))
            await record_audit(s, entity="feed_token", action="revoke", entity_id=token_id,
                               change={"calendar_id": calendar_id}, principal=principal, origin=origin_of(request))
    return Response(status_code=204)


WRITE = require_scope("events.write")
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=2048)]
TokenId = Annotated[str, Path(min_length=1, max_length=32)]


@router.post("/calendars/feed-tokens", status_code=201, summary="Create a token for the feed of every calendar")
async def create_all_token(request: Request, body: TokenCreate | None = None, principal: Principal = Depends(WRITE)) -> JSONResponse:
    return await _create_token(request, principal, None, body or TokenCreate())


@router.get("/calendars/feed-tokens", summary="Tokens of the feed of every calendar")
async def list_all_tokens(request: Request, limit: Limit = 100, cursor: Cursor = None, _p: Principal = Depends(WRITE)) -> JSONResponse:
    return await _list_tokens(request, None, limit, cursor)


@router.delete("/calendars/feed-tokens/{token_id}", status_code=204, summary="Revoke a token of the feed of every calendar")
async def revoke_all_token(token_id: TokenId, request: Request, principal: Principal = Depends(WRITE)) -> Response:
    return await _revoke_token(request, principal, None, token_id)


@router.post("/calendars/{calendar_id}/feed-tokens", status_code=201, summary="Create a token for one calendar's feed")
async def create_token(
    calendar_id: CalendarId, request: Request, body: TokenCreate | None = None, principal: Principal = Depends(WRITE)
) -> JSONResponse:
    return await _create_token(request, principal, calendar_id, body or TokenCreate())


@router.get("/calendars/{calendar_id}/feed-tokens", summary="Tokens of one calendar's feed")
async def list_tokens(
    calendar_id: CalendarId, request: Request, limit: Limit = 100, cursor: Cursor = None, _p: Principal = Depends(WRITE)
) -> JSONResponse:
    return await _list_tokens(request, calendar_id, limit, cursor)


@router.delete("/calendars/{calendar_id}/feed-tokens/{token_id}", status_code=204, summary="Revoke a token of one calendar's feed")
async def revoke_token(
    calendar_id: CalendarId, token_id: TokenId, request: Request, principal: Principal = Depends(WRITE)
) -> Response:
    return await _revoke_token(request, principal, calendar_id, token_id)

