"""The ``caldav`` source: one calendar collection per configured calendar.

How a sync reads the server (``cursor`` is what the last run left):

* First run, a full resync, a changed configuration, or a cursor that does
  not match what this source last wrote (``seq``): a **full listing** —
  the collection's ``DAV:sync-token`` property (read first, so a change made
  during the listing comes again next time), then a calendar-query REPORT
  with the data. Batches are ``full=True``; only the last, ``complete=True``
  one lets the pipeline delete local events the listing did not contain.
* With a sync token: one sync-collection REPORT with the token (changed
  objects come with their data, deleted ones as hrefs). A token the server
  refuses (403/409 ``DAV:valid-sync-token``) means a full listing instead.
* Without sync-collection: the ``getctag`` of the collection; equal →
  not modified; else the etags of every object, and a calendar-multiget of
  only the hrefs whose etag changed.

Recurring series are expanded inside ``[today - past_days, today +
horizon_days]`` by the kernel's shared iCalendar code (``chronos.plugin.ical``),
the same path the ics source takes. When the window moves to a new day, the
recurring objects are fetched again (one multiget) so their instances follow.

All network calls run in threads (the caldav client is synchronous), bounded
by ``caldav.timeout_seconds`` per request.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select

from chronos.plugin import (
    CalendarSpec,
    EventDraft,
    OutboundPolicy,
    OutboundRefused,
    PluginContext,
    Source,
    SourceBatch,
    SourceError,
    check_outbound,
    ical,
)

from chronos_caldav.dav import (
    MULTIGET_CHUNK,
    DavCalendar,
    InvalidSyncToken,
    ListingRefused,
    NoSyncCollection,
    Resource,
    redact,
)
from chronos_caldav.models import CaldavCalendarState, CaldavObject
from chronos_caldav.settings import CaldavCalendar, CaldavSettings

T = TypeVar("T")

#: Bump when parsing changes what an object yields: cursors of older versions then start a full listing.
PARSER_VERSION = 1


@dataclass
class Known:
    """What the last sync learnt about one href."""

    uid: str
    etag: str | None
    keys: list[tuple[str, str]]
    recurring: bool


@dataclass
class Parsed:
    """One object, parsed."""

    href: str
    etag: str | None
    uid: str
    drafts: list[EventDraft] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    recurring: bool = False
    #: Keys kept from the last sync when the object could not be read now (they stay stored).
    kept: list[tuple[str, str]] = field(default_factory=list)

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(d.uid, d.recurrence_id or "") for d in self.drafts]

    def row(self) -> Row:
        """What to remember of it (without the drafts)."""
        keys = [[d.uid, d.recurrence_id or ""] for d in self.drafts] + [list(k) for k in self.kept]
        return Row(self.href, self.uid, self.etag, keys, self.recurring)


@dataclass
class Row:
    """One ``caldav_objects`` row to write."""

    href: str
    uid: str
    etag: str | None
    keys: list[list[str]]
    recurring: bool


def parse_resource(res: Resource, window: ical.Window, known: Known | None) -> Parsed:
    """One calendar object → drafts (series expanded inside ``window``), tombstones and errors.

    An object that cannot be read is an error for its uid (the one stored
    for the href when the text has none), so the events it had stay.
    """
    fallback = known.uid if known is not None else res.href
    out = Parsed(res.href, res.etag, fallback)
    try:
        split = ical.split_calendar(res.data or "")
    except ical.CalendarFormatError as exc:
        out.errors.append((fallback, f"{res.href}: {exc}"))
        return out
    if not split.groups:
        out.errors.append((fallback, f"{res.href}: the object holds no VEVENT"))
        return out
    out.uid = split.groups[0].uid
    out.recurring = split.recurring
    parsed = ical.parse_groups(split.prefix, split.groups, window, split.x_wr_timezone)
    out.drafts, out.deleted, out.errors = parsed.drafts, parsed.deleted, parsed.errors
    return out


class CaldavSource(Source):
    """CalDAV calendar collections, synced incrementally."""

    name = "caldav"

    def __init__(
        self,
        settings: CaldavSettings,
        ctx: PluginContext | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.ctx = ctx
        self.clock = clock or (lambda: datetime.now(UTC))
        self._by_id = {c.id: c for c in settings.calendars}
        #: HTTP requests of the last run per calendar (bench and tests read it).
        self.requests: dict[str, int] = {}
        #: Seconds spent waiting for the server in the last run per calendar.
        self.http_seconds: dict[str, float] = {}
        self._clients: dict[str, tuple[str | None, DavCalendar]] = {}

    def calendars(self) -> list[CalendarSpec]:
        return [
            CalendarSpec(c.id, interval_seconds=c.interval_seconds, read_only=c.read_only, options={})
            for c in self.settings.calendars
        ]

    def can_delete(self, calendar: CalendarSpec) -> bool:
        return calendar.id in self._by_id

    # -- plumbing ---------------------------------------------------------------------------

    def window(self, cfg: CaldavCalendar) -> ical.Window:
        today = self.clock().astimezone(UTC).date()
        return ical.Window(
            start=datetime.combine(today - timedelta(days=cfg.past_days), time.min, UTC),
            end=datetime.combine(today + timedelta(days=cfg.horizon_days + 1), time.min, UTC),
            max_instances=self.settings.max_instances_per_event,
            default_timezone=cfg.default_timezone,
        )

    def _fingerprint(self, cfg: CaldavCalendar) -> str:
        relevant = {
            "v": PARSER_VERSION,
            "url": cfg.url,
            "user": cfg.username,
            "past": cfg.past_days,
            "horizon": cfg.horizon_days,
            "tz": cfg.default_timezone,
            "max": self.settings.max_instances_per_event,
        }
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking call in a thread, bounded in time (the client's own timeout applies per request)."""
        limit = self.settings.timeout_seconds * 4 + 5
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), limit)
        except TimeoutError:
            raise SourceError(f"the server did not finish answering within {limit:.0f} s") from None

    async def _connect(self, cfg: CaldavCalendar) -> DavCalendar:
        """The calendar's client, kept between runs (its session and negotiated auth) while the password stays."""
        if self.ctx is not None:
            await _check_outbound(self.ctx, cfg.url)
        try:
            password = cfg.password()
        except LookupError as exc:
            raise SourceError(str(exc)) from None
        held = self._clients.get(cfg.id)
        if held is not None and held[0] == password:
            held[1].requests, held[1].seconds = 0, 0.0
            return held[1]
        if held is not None:
            await asyncio.to_thread(held[1].close)
        dav = await asyncio.to_thread(
            lambda: DavCalendar(
                cfg.url,
                username=cfg.username,
                password=password,
                auth=cfg.auth,
                timeout=self.settings.timeout_seconds,
                verify_tls=self.settings.verify_tls,
                policy=OutboundPolicy.from_settings(self.ctx.settings) if self.ctx is not None else None,
            )
        )
        self._clients[cfg.id] = (password, dav)
        return dav

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for _password, dav in clients:
            await asyncio.to_thread(dav.close)

    # -- what the source remembers ---------------------------------------------------------------

    async def _seq(self, calendar_id: str) -> int:
        if self.ctx is None:
            return 0
        async with self.ctx.db.read() as s:
            state = await s.get(CaldavCalendarState, calendar_id)
        return state.seq if state is not None else 0

    async def _known(
        self, calendar_id: str, *, hrefs: list[str] | None = None, recurring: bool = False
    ) -> dict[str, Known]:
        """What the last syncs learnt: every href, only ``hrefs``, or only the recurring ones."""
        if self.ctx is None or hrefs == []:
            return {}
        query = select(CaldavObject).where(CaldavObject.calendar_id == calendar_id)
        if recurring:
            query = query.where(CaldavObject.recurring.is_(True))
        out: dict[str, Known] = {}
        chunks = [None] if hrefs is None else [hrefs[i : i + 500] for i in range(0, len(hrefs), 500)]
        async with self.ctx.db.read() as s:
            for chunk in chunks:
                q = query if chunk is None else query.where(CaldavObject.href.in_(chunk))
                for r in (await s.execute(q)).scalars():
                    out[r.href] = Known(r.uid, r.etag, [(k[0], k[1]) for k in r.keys or []], bool(r.recurring))
        return out

    async def _by_uid(self, calendar_id: str, uid: str) -> tuple[str, str | None] | None:
        if self.ctx is None:
            return None
        async with self.ctx.db.read() as s:
            row = (
                await s.execute(
                    select(CaldavObject.href, CaldavObject.etag)
                    .where(CaldavObject.calendar_id == calendar_id, CaldavObject.uid == uid)
                    .limit(1)
                )
            ).first()
        return None if row is None else (row[0], row[1])

    async def _remember(
        self, calendar_id: str, upserts: Iterable[Row], gone: Iterable[str], *, replace: bool, seq: int | None
    ) -> None:
        """Write what a committed batch taught (``replace``: the whole mapping of a full listing)."""
        if self.ctx is None:
            return
        upserts, gone = list(upserts), list(gone)
        table = CaldavObject.__table__
        async with self.ctx.db.write() as s:
            if seq is not None:  # read before the writes (nothing pending to flush)
                state = await s.get(CaldavCalendarState, calendar_id)
                if state is None:
                    s.add(CaldavCalendarState(calendar_id=calendar_id, seq=seq))
                else:
                    state.seq = seq
            if replace:
                await s.execute(delete(CaldavObject).where(CaldavObject.calendar_id == calendar_id))
            hrefs = [] if replace else [r.href for r in upserts] + gone
            for i in range(0, len(hrefs), 500):
                await s.execute(
                    delete(CaldavObject).where(
                        CaldavObject.calendar_id == calendar_id, CaldavObject.href.in_(hrefs[i : i + 500])
                    )
                )
            # Plain multi-row inserts: a full listing writes one row per object, tens of thousands.
            rows = [
                {
                    "calendar_id": calendar_id,
                    "href": r.href,
                    "uid": r.uid,
                    "etag": r.etag,
                    "keys": r.keys,
                    "recurring": r.recurring,
                }
                for r in upserts
            ]
            for i in range(0, len(rows), 5000):
                await s.execute(insert(table), rows[i : i + 5000])

    # -- one sync ------------------------------------------------------------------------------

    async def fetch(self, calendar: CalendarSpec, cursor: dict[str, Any] | None) -> AsyncIterator[SourceBatch]:
        cfg = self._by_id[calendar.id]
        window = self.window(cfg)
        day = window.start.date().isoformat()
        config = self._fingerprint(cfg)
        seq = await self._seq(cfg.id)
        prior = cursor or {}
        dav = await self._connect(cfg)
        try:
            async for batch in self._sync(cfg, dav, window, seq, prior, config, day):
                yield batch
        except SourceError:
            # A request that timed out may still hold the client in its thread: start afresh next time.
            self._clients.pop(cfg.id, None)
            raise
        finally:
            self.requests[cfg.id] = dav.requests
            self.http_seconds[cfg.id] = dav.seconds

    async def _sync(
        self,
        cfg: CaldavCalendar,
        dav: DavCalendar,
        window: ical.Window,
        seq: int,
        prior: dict[str, Any],
        config: str,
        day: str,
    ) -> AsyncIterator[SourceBatch]:
        base = {"config": config, "window": day, "seq": seq}
        # seq counts completed listings and syncs: a cursor from another one (not saved, a crash) is not trusted.
        incremental = seq > 0 and prior.get("config") == config and prior.get("seq") == seq
        moved = prior.get("window") != day
        changed: list[Resource] | None = None
        new_cursor: dict[str, Any] = {}
        known: dict[str, Known] = {}
        no_sync = False
        if incremental and prior.get("sync_token"):
            try:
                changed, token = await self._call(dav.sync_collection, prior["sync_token"])
                new_cursor = {**base, "mode": "sync", "sync_token": token or prior["sync_token"]}
            except InvalidSyncToken:
                changed = None  # the server forgot the token: list everything
            except NoSyncCollection:
                changed, no_sync = None, True  # it offered a token but does not answer the report
            else:
                known = await self._known(cfg.id, hrefs=[r.href for r in changed])
                if moved:
                    known.update(await self._known(cfg.id, recurring=True))
        elif incremental and prior.get("mode") == "ctag":
            known = await self._known(cfg.id)
            info = await self._call(functools.partial(dav.info, ctag=True))
            new_cursor = {**base, "mode": "ctag", "ctag": info.ctag}
            if info.ctag is not None and info.ctag == prior.get("ctag"):
                changed = []
            else:
                etags = await self._call(dav.etags)
                stale = [h for h, e in etags.items() if h not in known or known[h].etag != e or not e]
                changed = await self._call(dav.multiget, stale) if stale else []
                changed += [Resource(h, None, None) for h in known if h not in etags]
        if changed is None:
            known = await self._known(cfg.id)
            async for batch in self._full(cfg, dav, window, known, seq, base, use_sync=not no_sync):
                yield batch
            return
        if moved:  # recurring series shift with the window
            again = {r.href for r in changed}
            series = [h for h, k in known.items() if k.recurring and h not in again]
            if series:
                changed += [r for r in await self._call(dav.multiget, series)]
        if not changed:
            yield SourceBatch(not_modified=True, cursor=new_cursor)
            return
        async for batch in self._incremental(cfg, window, known, changed, seq, new_cursor):
            yield batch

    async def _full(
        self,
        cfg: CaldavCalendar,
        dav: DavCalendar,
        window: ical.Window,
        known: dict[str, Known],
        seq: int,
        base: dict[str, Any],
        use_sync: bool = True,
    ) -> AsyncIterator[SourceBatch]:
        # The token (RFC 6578's DAV:sync-token property) is read before the listing: a change made
        # meanwhile is reported again next time, never lost. A calendar-query lists faster than a
        # sync-collection without a token on Radicale (one pass over the collection instead of two).
        info = await self._call(functools.partial(dav.info, token=use_sync))
        resources: list[Resource] | None = None
        token = info.sync_token if use_sync and info.supports_sync else None
        if token is None and use_sync and info.supports_sync:
            try:
                resources, token = await self._call(dav.sync_collection, None)
            except (NoSyncCollection, InvalidSyncToken):
                resources = None
        if token is None:
            # The ctag before the listing, for the same reason.
            ctag = (await self._call(functools.partial(dav.info, ctag=True))).ctag
            cursor = {**base, "seq": seq + 1, "mode": "ctag", "ctag": ctag}
        else:
            cursor = {**base, "seq": seq + 1, "mode": "sync", "sync_token": token}
        mapping: list[Row] = []
        batches = self._parsed_batches(cfg.id, self._listing(dav, resources), window, known)
        pending: SourceBatch | None = None
        async for parsed in batches:
            for p in parsed:
                p.kept = known[p.href].keys if p.errors and p.href in known else []
            mapping += [p.row() for p in parsed]
            batch = SourceBatch(
                drafts=[d for p in parsed for d in p.drafts],
                deleted=[k for p in parsed for k in p.deleted],
                errors=[e for p in parsed for e in p.errors],
                full=True,
            )
            if pending is not None:
                yield pending
            pending = batch
        last = pending or SourceBatch(full=True)
        last.complete, last.cursor = True, cursor
        yield last
        # The pipeline pulls again only after it committed the last batch.
        await self._remember(cfg.id, mapping, [], replace=True, seq=seq + 1)

    async def _incremental(
        self,
        cfg: CaldavCalendar,
        window: ical.Window,
        known: dict[str, Known],
        changed: list[Resource],
        seq: int,
        cursor: dict[str, Any],
    ) -> AsyncIterator[SourceBatch]:
        cursor = {**cursor, "seq": seq + 1}
        gone = [r.href for r in changed if r.data is None]
        tombstones = [k for h in gone if h in known for k in known[h].keys]
        present = [r for r in changed if r.data is not None]
        batches: list[tuple[SourceBatch, list[Row]]] = []
        async for parsed in self._parsed_batches(cfg.id, present, window, known):
            deleted: list[tuple[str, str]] = []
            for p in parsed:
                before = known.get(p.href)
                p.kept = before.keys if p.errors and before is not None else []
                deleted += p.deleted
                if before is not None and not p.errors:
                    now = set(p.keys) | set(p.deleted)
                    deleted += [k for k in before.keys if k not in now]
            batch = SourceBatch(
                drafts=[d for p in parsed for d in p.drafts],
                deleted=deleted,
                errors=[e for p in parsed for e in p.errors],
            )
            batches.append((batch, [p.row() for p in parsed]))
        if tombstones or not batches:
            batches.append((SourceBatch(deleted=tombstones), []))
        batches[-1][0].cursor = cursor
        for i, (batch, rows) in enumerate(batches):
            yield batch
            last = i == len(batches) - 1
            await self._remember(cfg.id, rows, gone if last else [], replace=False, seq=seq + 1 if last else None)

    async def _listing(self, dav: DavCalendar, listed: list[Resource] | None) -> AsyncIterator[list[Resource]]:
        """Everything in the calendar: ``listed`` when a sync-collection brought it, else one
        calendar-query, else (a server capping REPORT sizes) the etags and multigets of 1000 hrefs,
        the next one fetched while the pipeline stores the current one."""
        if listed is None:
            try:
                listed = await self._call(dav.list_all)
            except ListingRefused:
                listed = None
        if listed is not None:
            yield [r for r in listed if r.data is not None]
            return
        hrefs = list(await self._call(dav.etags))
        chunks = [hrefs[i : i + MULTIGET_CHUNK] for i in range(0, len(hrefs), MULTIGET_CHUNK)]
        ahead: asyncio.Task[list[Resource]] | None = None
        try:
            for i, _chunk in enumerate(chunks):
                got = await ahead if ahead is not None else await self._call(dav.multiget, chunks[i])
                ahead = None
                if i + 1 < len(chunks):
                    ahead = asyncio.ensure_future(self._call(dav.multiget, chunks[i + 1]))
                yield [r for r in got if r.data is not None]
        finally:
            if ahead is not None:
                ahead.cancel()

    async def _parsed_batches(
        self,
        calendar_id: str,
        resources: list[Resource] | AsyncIterator[list[Resource]],
        window: ical.Window,
        known: dict[str, Known],
    ) -> AsyncIterator[list[Parsed]]:
        """Parse on the kernel's expansion threads (as this calendar's share, so one large calendar
        never holds them all), about ``batch_size`` drafts per list."""
        size = self.settings.batch_size

        def parse_some(chunk: list[Resource]) -> list[Parsed]:
            return [parse_resource(r, window, known.get(r.href)) for r in chunk]

        async def lists() -> AsyncIterator[list[Resource]]:
            if isinstance(resources, list):
                yield resources
            else:
                async for got in resources:
                    yield got

        step = max(1, min(size, 500))
        expansion, key = ical.expansion(), ("caldav", calendar_id)
        out: list[Parsed] = []
        drafts = 0
        async for listed in lists():
            for i in range(0, len(listed), step):
                for p in await expansion.run(key, parse_some, listed[i : i + step]):
                    out.append(p)
                    drafts += len(p.drafts)
                    if drafts >= size:
                        yield out
                        out, drafts = [], 0
        if out:
            yield out

    # -- write-back ------------------------------------------------------------------------------

    async def delete_entry(self, calendar: CalendarSpec, uid: str, recurrence_id: str = "") -> None:
        cfg = self._by_id.get(calendar.id)
        if cfg is None:
            raise SourceError(f"calendar {calendar.id!r} is not configured")
        if cfg.read_only:
            raise SourceError(f"calendar {calendar.id!r} is read-only (caldav read_only: true)")
        if recurrence_id:
            raise SourceError(
                "one instance of a recurring series cannot be deleted at the server (only whole events); not deleted"
            )
        match = await self._by_uid(cfg.id, uid)
        if match is None:
            return  # never synced or already gone: nothing to delete
        href, etag = match
        dav = await self._connect(cfg)
        status = await self._call(dav.delete, href, etag)
        if status == 412:
            raise SourceError(
                f"the event {uid!r} changed at {redact(cfg.url)} since the last sync (HTTP 412 Precondition Failed);"
                " not deleted"
            )
        if status not in (200, 204, 404):
            raise SourceError(f"HTTP {status} from {redact(cfg.url)} deleting {uid!r}; not deleted")
        # The mapping stays: the next sync sees the href deleted and turns it into tombstones.


async def _check_outbound(ctx: PluginContext, url: str) -> None:
    """The outbound guard's verdict on the calendar URL before a run (each new connection is checked again)."""
    try:
        await check_outbound(ctx, url)
    except OutboundRefused as exc:
        raise SourceError(f"refused to connect to {redact(url)}: {exc}") from None
