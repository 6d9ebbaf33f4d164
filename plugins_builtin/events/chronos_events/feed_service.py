"""ICS feeds of stored events and the per-feed tokens that open them.

Only a token's SHA-256 is stored; the secret is shown once, on creation. A
token for all calendars (``calendar_id`` None) also opens each single
calendar's feed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from icalendar import Event as IcsEvent
from sqlalchemy import insert, select, text, update

from chronos.plugin import NotFound, Origin, PluginContext, Principal, decode_cursor, encode_cursor, record_audit

from chronos_events.models import FeedToken
from chronos_events.query import EventQuery, QueryBuilder, iso_z
from chronos_events.settings import EventsSettings
from chronos_events.store import T

FT = FeedToken.__table__
TOKEN_PREFIX = "cft_"
PRODID = "-//Chronos Engine//events feed//EN"
FEED_PAGE = 1000


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def token_holder(ctx: PluginContext, token: str, calendar_id: str | None) -> str | None:
    """``feed-token:<id>`` when ``token`` is valid for the feed of ``calendar_id``, else None."""
    digest = hash_token(token)
    async with ctx.db.read() as s:
        row = (await s.execute(select(FT).where(FT.c.token_hash == digest))).first()
    valid = (
        row is not None
        and hmac.compare_digest(row.token_hash, digest)
        and row.revoked_at is None
        and (row.calendar_id is None or row.calendar_id == calendar_id)
    )
    return f"feed-token:{row.id}" if valid and row is not None else None


# -- the feed -----------------------------------------------------------------------------


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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n").replace("\r", "")


def _header(calendar_id: str | None) -> bytes:
    name = calendar_id or "All calendars"
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"
        f"PRODID:{PRODID}\r\nCALSCALE:GREGORIAN\r\nMETHOD:PUBLISH\r\n"
        f"X-WR-CALNAME:{_escape(name)}\r\n"
    ).encode()


async def _vevents(s: Any, builder: QueryBuilder, q: EventQuery) -> AsyncIterator[bytes]:
    """The VEVENTs of every page of ``q``, a page at a time."""
    while True:
        compiled = builder.page(q)
        assert compiled is not None
        ids = [r[0] for r in (await s.execute(text(compiled.sql), compiled.params)).all()]
        page_ids = ids[:FEED_PAGE]
        if page_ids:
            rows = (await s.execute(select(T).where(T.c.id.in_(page_ids)).order_by(T.c.start_utc, T.c.id))).all()
            yield b"".join(_vevent(r) for r in rows)
        if len(ids) <= FEED_PAGE:
            return
        last = rows[-1]._mapping
        cursor = q.next_cursor({"start_utc": iso_z(last["start_utc"]), "id": last["id"]})
        q = EventQuery(
            start=q.start, end=q.end, calendars=q.calendars, direction="all", limit=FEED_PAGE, cursor=cursor, now=q.now
        )


def feed(ctx: PluginContext, calendar_id: str | None) -> AsyncIterator[bytes]:
    """The iCalendar feed of ``calendar_id`` (None: every calendar), streamed.

    The window (``feed_past_days`` back, ``feed_future_days`` ahead) is fixed
    when the feed is asked for.
    """
    settings = ctx.section(EventsSettings)
    now = datetime.now(UTC)
    q = EventQuery(
        start=now - timedelta(days=settings.feed_past_days),
        end=now + timedelta(days=settings.feed_future_days),
        calendars=[calendar_id] if calendar_id else [],
        direction="all",
        limit=FEED_PAGE,
        now=now,
    )
    builder = QueryBuilder(ctx.db.dialect)

    async def body() -> AsyncIterator[bytes]:
        yield _header(calendar_id)
        async with ctx.db.read() as s:
            async for part in _vevents(s, builder, q):
                yield part
        yield b"END:VCALENDAR\r\n"

    return body()


# -- tokens -------------------------------------------------------------------------------


def token_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "calendar_id": row.calendar_id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": iso_z(row.created_at),
        "revoked_at": iso_z(row.revoked_at),
        "status": "revoked" if row.revoked_at else "active",
    }


def _feed_of(calendar_id: str | None) -> Any:
    return FT.c.calendar_id.is_(None) if calendar_id is None else FT.c.calendar_id == calendar_id


async def create_token(
    ctx: PluginContext, calendar_id: str | None, name: str, *, principal: Principal, origin: Origin | None
) -> dict[str, Any]:
    """A new token for the feed of ``calendar_id`` (None: every calendar), with its secret and feed URL."""
    token_id = "ft_" + secrets.token_hex(6)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(24)
    values = {
        "id": token_id,
        "calendar_id": calendar_id,
        "name": name,
        "prefix": secret[:10],
        "token_hash": hash_token(secret),
        "created_at": datetime.now(UTC),
        "created_by": principal.key_id,
    }
    async with ctx.db.write() as s:
        await s.execute(insert(FT).values(values))
        await record_audit(
            s,
            entity="feed_token",
            action="create",
            entity_id=token_id,
            change={"calendar_id": calendar_id, "name": name},
            principal=principal,
            origin=origin,
        )
        row = (await s.execute(select(FT).where(FT.c.id == token_id))).first()
    path = f"/api/v1/calendars/{calendar_id}/feed.ics" if calendar_id else "/api/v1/calendars/feed.ics"
    return {**token_view(row), "token": secret, "feed_url": f"{path}?token={secret}"}


async def list_tokens(ctx: PluginContext, calendar_id: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of the tokens of one feed, by id."""
    kind = f"feed-tokens:{calendar_id or '*'}"
    stmt = select(FT).where(_feed_of(calendar_id))
    if cursor:
        (after,) = decode_cursor(kind, cursor, [str])
        stmt = stmt.where(FT.c.id > after)
    async with ctx.db.read() as s:
        rows = (await s.execute(stmt.order_by(FT.c.id).limit(limit + 1))).all()
    items = [token_view(r) for r in rows[:limit]]
    nxt = encode_cursor(kind, [items[-1]["id"]]) if len(rows) > limit else None
    return {"items": items, "next_cursor": nxt}


async def revoke_token(
    ctx: PluginContext, calendar_id: str | None, token_id: str, *, principal: Principal, origin: Origin | None
) -> None:
    """Revoke a token of one feed (revoking twice changes nothing)."""
    async with ctx.db.write() as s:
        row = (await s.execute(select(FT).where(FT.c.id == token_id, _feed_of(calendar_id)))).first()
        if row is None:
            raise NotFound(f"No feed token {token_id!r} for this feed", type="not-found")
        if row.revoked_at is None:
            await s.execute(update(FT).where(FT.c.id == token_id).values(revoked_at=datetime.now(UTC)))
            await record_audit(
                s,
                entity="feed_token",
                action="revoke",
                entity_id=token_id,
                change={"calendar_id": calendar_id},
                principal=principal,
                origin=origin,
            )
