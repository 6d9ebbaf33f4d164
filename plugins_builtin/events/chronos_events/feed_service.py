"""ICS feeds of stored events and the per-feed tokens that open them.

Only a token's SHA-256 is stored; the secret is shown once, on creation. A
token is ``cft_<id>_<secret>``: it is looked up by its id and its hash
compared in constant time (tokens from before ids are found by their hash).
A token for all calendars (``calendar_id`` None) also opens each single
calendar's feed. Tokens expire (``events.feed_token_days``, at most
``events.feed_token_max_days``) and die with the API key that created them;
tokens from before expiry existed have none and live as long as their key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import Event as IcsEvent, Timezone as IcsTimezone
from sqlalchemy import func, insert, select, text, update

from chronos.plugin import (
    EventIntake,
    InvalidInput,
    NotFound,
    Origin,
    PluginContext,
    Principal,
    active_key_ids,
    decode_cursor,
    encode_cursor,
    record_audit,
)

from chronos_events.models import FeedToken
from chronos_events.query import EventQuery, QueryBuilder, iso_z
from chronos_events.settings import EventsSettings
from chronos_events.source import LOCAL_SOURCE
from chronos_events.store import T

FT = FeedToken.__table__
TOKEN_PREFIX = "cft_"
PRODID = "-//Chronos Engine//events feed//EN"
FEED_PAGE = 1000
TZID = re.compile(r";TZID=\"?([^;:\"]+)")
TOKEN_ID_LEN = len("ft_") + 12
#: last_used_at is advisory: written at most this often per token.
TOUCH_EVERY = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id_of(token: str) -> str | None:
    """The token id inside a well-formed ``cft_<id>_<secret>`` token, else None
    (tokens issued before ids were part of them are found by their hash)."""
    if not token.startswith(TOKEN_PREFIX + "ft_"):
        return None
    rest = token[len(TOKEN_PREFIX) :]
    token_id, sep, secret = rest[:TOKEN_ID_LEN], rest[TOKEN_ID_LEN : TOKEN_ID_LEN + 1], rest[TOKEN_ID_LEN + 1 :]
    return token_id if sep == "_" and secret else None


def _status(row: Any, now: datetime, key_alive: bool | None = None) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    if key_alive is False:
        return "key-inactive"
    return "active"


async def token_holder(ctx: PluginContext, token: str, calendar_id: str | None) -> str | None:
    """``feed-token:<id>`` when ``token`` is valid for the feed of ``calendar_id``, else None.

    Valid: found (by the id it carries; older tokens by their hash), the hash
    matches (constant time), not revoked, not expired, for this feed, and the
    API key that created it is still active.
    """
    digest = hash_token(token)
    token_id = token_id_of(token)
    stmt = select(FT).where(FT.c.id == token_id) if token_id else select(FT).where(FT.c.token_hash == digest)
    now = datetime.now(UTC)
    async with ctx.db.read() as s:
        row = (await s.execute(stmt)).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        if _status(row, now) != "active" or (row.calendar_id is not None and row.calendar_id != calendar_id):
            return None
        if row.created_by is not None and row.created_by not in await active_key_ids(s, [row.created_by]):
            return None
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        async with ctx.db.write() as s:
            await s.execute(update(FT).where(FT.c.id == row.id).values(last_used_at=now))
    return f"feed-token:{row.id}"


# -- the feed -----------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _zone(name: str | None) -> ZoneInfo | None:
    """The IANA zone ``name`` (None for UTC, unknown names and no name: times are then written in UTC)."""
    if not name or name in ("UTC", "Etc/UTC", "Z"):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _uid(m: Any, recurrence_id: str) -> str:
    key = "\x00".join((m["source"], m["calendar_id"], m["uid"], recurrence_id))
    # Stable per event and instance, unique across calendars in the combined feed.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + "@chronos"


def _rid_value(recurrence_id: str, zone: ZoneInfo | None) -> date | datetime:
    """A stored recurrence id (RFC 5545 basic format, UTC or floating, or a date) as a value in ``zone``."""
    if len(recurrence_id) == 8:
        return date(int(recurrence_id[:4]), int(recurrence_id[4:6]), int(recurrence_id[6:8]))
    at = datetime.strptime(recurrence_id.rstrip("Z"), "%Y%m%dT%H%M%S")
    if recurrence_id.endswith("Z"):
        at = at.replace(tzinfo=UTC)
        return at.astimezone(zone) if zone is not None else at
    return at


def _fold(line: str) -> bytes:
    """A content line folded at 75 octets (RFC 5545 §3.1), never inside a UTF-8 character."""
    data = line.encode("utf-8")
    parts = []
    width = 75
    while len(data) > width:
        cut = width
        while cut > 1 and (data[cut] & 0xC0) == 0x80:
            cut -= 1
        parts.append(data[:cut])
        data = data[cut:]
        width = 74  # continuation lines start with a space
    parts.append(data)
    return b"\r\n ".join(parts)


class FeedWriter:
    """VEVENTs (and the VTIMEZONEs they use) of stored rows.

    Timed events keep their named zone (``DTSTART;TZID=…`` with a VTIMEZONE
    written before its first use). In series mode an instance of a series
    that came from one (``metadata.series``, stored by the source) is
    published once as the series' master (DTSTART, RRULE, RDATE, EXDATE as
    the source wrote them) and modified instances as overrides with
    RECURRENCE-ID; everything else is one VEVENT per stored event.
    """

    def __init__(self, series: bool, today: date) -> None:
        self.series = series
        self.zones: set[str] = set()
        self.masters: set[tuple[str, str, str]] = set()
        self.first, self.last = date(today.year - 10, 1, 1), date(today.year + 5, 12, 31)

    def _timezone(self, zone: ZoneInfo) -> bytes:
        if zone.key in self.zones:
            return b""
        self.zones.add(zone.key)
        return IcsTimezone.from_tzid(zone.key, first_date=self.first, last_date=self.last).to_ical()

    def _base(self, m: Any, uid: str) -> IcsEvent:
        ev = IcsEvent()
        ev.add("uid", uid)
        ev.add("dtstamp", m["updated_at"])
        ev.add("summary", m["title"])
        if m["description"]:
            ev.add("description", m["description"])
        if m["location"]:
            ev.add("location", m["location"])
        ev.add("status", m["status"].upper())
        ev.add("transp", "TRANSPARENT" if m["transparency"] == "free" else "OPAQUE")
        if m["mode"]:
            ev.add("x-chronos-mode", m["mode"].upper())  # unset: the calendar's default
        if m["tags"]:
            ev.add("categories", list(m["tags"]))
        ev.add("created", m["created_at"])
        ev.add("last-modified", m["updated_at"])
        return ev

    def _times(self, ev: IcsEvent, m: Any) -> bytes:
        """Add DTSTART/DTEND; returns the VTIMEZONE to write first (or nothing)."""
        if m["all_day"] and m["start_date"] is not None and m["end_date"] is not None:
            ev.add("dtstart", m["start_date"])
            ev.add("dtend", m["end_date"])
            return b""
        zone = _zone(m["timezone"])
        if zone is None:
            ev.add("dtstart", m["start_utc"])
            ev.add("dtend", m["end_utc"])
            return b""
        ev.add("dtstart", m["start_utc"].astimezone(zone))
        ev.add("dtend", m["end_utc"].astimezone(zone))
        return self._timezone(zone)

    def vevent(self, m: Any) -> bytes:
        ev = self._base(m, _uid(m, m["recurrence_id"]))
        vtimezone = self._times(ev, m)
        return vtimezone + ev.to_ical()

    def _series_zones(self, lines: list[str]) -> bytes | None:
        """VTIMEZONEs of the zones the master's lines name; None when one is not an IANA zone."""
        out = b""
        for name in set(TZID.findall("\n".join(lines))):
            zone = _zone(name)
            if zone is None:
                return None
            out += self._timezone(zone)
        return out

    def series_part(self, m: Any, series: dict[str, Any]) -> bytes | None:
        """The master (first instance of a series seen) or an override; None: write the instance itself."""
        lines = series.get("master")
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            return None
        key = (m["source"], m["calendar_id"], m["uid"])
        zones = self._series_zones(lines)
        if zones is None:
            return None
        uid = _uid(m, "")
        if series.get("override"):
            ev = self._base(m, uid)
            vtimezone = self._times(ev, m)
            found = TZID.search(next((x for x in lines if x.upper().startswith("DTSTART")), ""))
            ev.add("recurrence-id", _rid_value(m["recurrence_id"], _zone(found.group(1)) if found else None))
            return zones + vtimezone + ev.to_ical()
        if key in self.masters:
            return b""
        self.masters.add(key)
        body = self._base(m, uid).to_ical()
        cut = body.rindex(b"END:VEVENT")
        raw = b"".join(_fold(x) + b"\r\n" for x in lines)
        return zones + body[:cut] + raw + body[cut:]

    def render(self, rows: list[Any]) -> bytes:
        parts = []
        for row in rows:
            m = row._mapping
            meta = m["metadata"] or {}
            part = None
            if self.series and m["recurrence_id"] and isinstance(meta.get("series"), dict):
                part = self.series_part(m, meta["series"])
            parts.append(self.vevent(m) if part is None else part)
        return b"".join(parts)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n").replace("\r", "")


def _header(calendar_id: str | None) -> bytes:
    name = calendar_id or "All calendars"
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"
        f"PRODID:{PRODID}\r\nCALSCALE:GREGORIAN\r\nMETHOD:PUBLISH\r\n"
        f"X-WR-CALNAME:{_escape(name)}\r\n"
    ).encode()


async def _vevents(s: Any, builder: QueryBuilder, q: EventQuery, writer: FeedWriter) -> AsyncIterator[bytes]:
    """The VEVENTs of every page of ``q``, a page at a time."""
    while True:
        compiled = builder.page(q)
        assert compiled is not None
        ids = [r[0] for r in (await s.execute(text(compiled.sql), compiled.params)).all()]
        page_ids = ids[:FEED_PAGE]
        if page_ids:
            rows = (await s.execute(select(T).where(T.c.id.in_(page_ids)).order_by(T.c.start_utc, T.c.id))).all()
            yield writer.render(rows)
        if len(ids) <= FEED_PAGE:
            return
        last = rows[-1]._mapping
        cursor = q.next_cursor({"start_utc": iso_z(last["start_utc"]), "id": last["id"]})
        q = EventQuery(
            start=q.start, end=q.end, calendars=q.calendars, direction="all", limit=FEED_PAGE, cursor=cursor, now=q.now
        )


async def known_calendar(ctx: PluginContext, calendar_id: str) -> bool:
    """A calendar is known when it is configured (a local calendar, any source's) or has stored events."""
    if calendar_id in ctx.section(EventsSettings).local_calendars:
        return True
    if ctx.has_service(EventIntake) and any(
        c["calendar_id"] == calendar_id for c in await ctx.service(EventIntake).calendars()
    ):
        return True
    async with ctx.db.read() as s:
        return (await s.execute(select(T.c.id).where(T.c.calendar_id == calendar_id).limit(1))).first() is not None


async def feed(ctx: PluginContext, calendar_id: str | None, series: bool | None = None) -> AsyncIterator[bytes]:
    """The iCalendar feed of ``calendar_id`` (None: every calendar), to stream.

    :class:`NotFound` for a calendar that is neither configured nor holds
    events. The window (``feed_past_days`` back, ``feed_future_days`` ahead)
    is fixed when the feed is asked for. ``series`` (default
    ``events.feed_series``) publishes recurring series as series.
    """
    if calendar_id is not None and not await known_calendar(ctx, calendar_id):
        raise NotFound(f"No calendar {calendar_id!r}", type="not-found")
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
    writer = FeedWriter(settings.feed_series if series is None else series, now.date())

    async def body() -> AsyncIterator[bytes]:
        yield _header(calendar_id)
        async with ctx.db.read() as s:
            async for part in _vevents(s, builder, q, writer):
                yield part
        yield b"END:VCALENDAR\r\n"

    return body()


async def list_calendars(ctx: PluginContext) -> dict[str, Any]:
    """Every configured calendar and every calendar with stored events, with the
    outcome of its last sync and its number of events."""
    settings = ctx.section(EventsSettings)
    configured = await ctx.service(EventIntake).calendars() if ctx.has_service(EventIntake) else []
    async with ctx.db.read() as s:
        counts = {
            (r[0], r[1]): r[2]
            for r in await s.execute(
                select(T.c.source, T.c.calendar_id, func.count()).group_by(T.c.source, T.c.calendar_id)
            )
        }
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for c in configured:
        items[(c["source"], c["calendar_id"])] = {
            "id": c["calendar_id"],
            "source": c["source"],
            "name": c.get("name") or c["calendar_id"],
            "configured": True,
            "read_only": c["read_only"],
            "last_sync_at": iso_z(c.get("last_success_at")),
            "last_sync_status": c.get("last_status"),
            "last_error": c.get("last_error"),
        }
    for cal in settings.local_calendars:
        items.setdefault(
            (LOCAL_SOURCE, cal),
            {
                "id": cal,
                "source": LOCAL_SOURCE,
                "name": cal,
                "configured": True,
                "read_only": False,
                "last_sync_at": None,
                "last_sync_status": None,
                "last_error": None,
            },
        )
    for source, cal in counts:
        items.setdefault(
            (source, cal),
            {
                "id": cal,
                "source": source,
                "name": cal,
                "configured": False,
                "read_only": True,
                "last_sync_at": None,
                "last_sync_status": None,
                "last_error": None,
            },
        )
    out = []
    for key in sorted(items):
        item = items[key]
        item["event_count"] = counts.get(key, 0)
        item["feed_url"] = f"/api/v1/calendars/{quote(item['id'], safe='')}/feed.ics"
        out.append(item)
    return {"items": out}


# -- tokens -------------------------------------------------------------------------------


def token_view(row: Any, key_alive: bool | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "calendar_id": row.calendar_id,
        "scope": "calendar" if row.calendar_id else "all-calendars",
        "name": row.name,
        "prefix": row.prefix,
        "created_by": row.created_by,
        "created_at": iso_z(row.created_at),
        "expires_at": iso_z(row.expires_at),
        "last_used_at": iso_z(row.last_used_at),
        "revoked_at": iso_z(row.revoked_at),
        "status": _status(row, datetime.now(UTC), key_alive),
    }


def _feed_of(calendar_id: str | None) -> Any:
    return FT.c.calendar_id.is_(None) if calendar_id is None else FT.c.calendar_id == calendar_id


async def create_token(
    ctx: PluginContext,
    calendar_id: str | None,
    name: str,
    *,
    expires_in_days: int | None = None,
    principal: Principal,
    origin: Origin | None,
) -> dict[str, Any]:
    """A new token for the feed of ``calendar_id`` (None: every calendar), with its secret and feed URL.

    It expires after ``expires_in_days`` (default ``events.feed_token_days``,
    at most ``events.feed_token_max_days``) and dies earlier with the key
    that creates it.
    """
    settings = ctx.section(EventsSettings)
    days = settings.feed_token_days if expires_in_days is None else expires_in_days
    if days > settings.feed_token_max_days:
        raise InvalidInput(
            f"A feed token may live at most {settings.feed_token_max_days} days (events.feed_token_max_days)",
            type="validation",
            errors=[
                {
                    "pointer": "/expires_in_days",
                    "location": "body",
                    "detail": f"at most {settings.feed_token_max_days}",
                    "type": "value_error",
                }
            ],
        )
    token_id = "ft_" + secrets.token_hex(6)
    secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(24)}"
    now = datetime.now(UTC)
    values = {
        "id": token_id,
        "calendar_id": calendar_id,
        "name": name,
        "prefix": secret[: len(TOKEN_PREFIX) + TOKEN_ID_LEN],
        "token_hash": hash_token(secret),
        "created_at": now,
        "created_by": principal.key_id,
        "expires_at": now + timedelta(days=days),
    }
    async with ctx.db.write() as s:
        await s.execute(insert(FT).values(values))
        await record_audit(
            s,
            entity="feed_token",
            action="create",
            entity_id=token_id,
            change={"calendar_id": calendar_id, "name": name, "expires_at": iso_z(values["expires_at"])},
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
        alive = await active_key_ids(s, {r.created_by for r in rows if r.created_by is not None})
    items = [token_view(r, r.created_by is None or r.created_by in alive) for r in rows[:limit]]
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
