"""The ``ics`` source: one calendar per configured file or feed.

Every sync is a full listing (``full=True``, ``complete=True`` on the last
batch): an ICS file has no change feed. What makes re-syncs cheap is the
cursor: ``{mtime_ns, size}`` or ``{etag, last_modified}`` plus the sha256 of
the content, the day of the expansion window and a fingerprint of the
calendar's options. An unchanged file (same mtime and size, or 304, or the
same bytes) ends the run as "not modified" without parsing — unless the
window moved to a new day and the file has recurring series, whose instances
then shift with the window.

Large files are parsed by a pool of worker processes in chunks of whole
UIDs, so the event loop stays free and parsing uses every core; the pipeline
stores the first batches while later chunks are still being parsed. Smaller
files are parsed in the kernel's expansion threads (``ical.expansion()``),
where one calendar never holds every thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from chronos.plugin import CalendarSpec, EventDraft, OutboundPolicy, Source, SourceBatch, SourceError, ical

from chronos_ics.fetch import download, read_file
from chronos_ics.settings import IcsCalendar, IcsSettings, default_workers

#: Bump when parsing changes what a file yields: cached "not modified" answers are then ignored.
PARSER_VERSION = 2  # 2: series instances carry metadata["series"]


#: The uid a run's error names when a calendar is over ``max_instances_per_calendar``.
OVER_CAP_UID = "(calendar)"


def _order_key(d: EventDraft) -> tuple[datetime, str, str]:
    return (ical.utc_key(d.start), d.uid, d.recurrence_id or "")


def _first_in_time(
    sent: list[tuple[datetime, str, str]], held: list[EventDraft], cap: int
) -> tuple[list[EventDraft], list[tuple[str, str]], datetime]:
    """Of everything (``sent`` already, ``held`` back), the first ``cap`` in time order:
    the held drafts among them, the sent keys beyond them, and the last start kept."""
    entries: list[tuple[tuple[datetime, str, str], EventDraft | None]] = [(k, None) for k in sent]
    entries += [(_order_key(d), d) for d in held]
    entries.sort(key=lambda e: e[0])
    keep, drop = entries[:cap], entries[cap:]
    drafts = [d for _, d in keep if d is not None]
    dropped = [(k[1], k[2]) for k, d in drop if d is None]
    return drafts, dropped, keep[-1][0][0]


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


class IcsSource(Source):
    """iCalendar files and http(s) feeds, expanded and streamed in batches."""

    name = "ics"

    def __init__(
        self,
        settings: IcsSettings,
        clock: Callable[[], datetime] | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.outbound = outbound or OutboundPolicy()  # feeds at public addresses only, unless network.allow says more
        self.clock = clock or (lambda: datetime.now(UTC))
        self._by_id = {c.id: c for c in settings.calendars}
        self._pool: ProcessPoolExecutor | None = None
        self.workers = settings.parse_workers if settings.parse_workers is not None else default_workers()

    def calendars(self) -> list[CalendarSpec]:
        return [
            CalendarSpec(
                c.id, interval_seconds=c.interval_seconds, read_only=c.read_only, options=c.model_dump(mode="json")
            )
            for c in self.settings.calendars
        ]

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop the parser processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- one sync -----------------------------------------------------------------------

    def window(self, cfg: IcsCalendar) -> ical.Window:
        today = self.clock().astimezone(UTC).date()
        shift = timedelta(0)
        if cfg.demo_week is not None:
            shift = timedelta(weeks=(_monday(today) - _monday(cfg.demo_week)).days // 7)
        return ical.Window(
            start=datetime.combine(today - timedelta(days=cfg.past_days), time.min, UTC),
            end=datetime.combine(today + timedelta(days=cfg.horizon_days + 1), time.min, UTC),
            shift=shift,
            max_instances=self.settings.max_instances_per_event,
            default_timezone=cfg.default_timezone,
        )

    def _fingerprint(self, cfg: IcsCalendar, window: ical.Window) -> str:
        relevant = {
            "v": PARSER_VERSION,
            "past": cfg.past_days,
            "horizon": cfg.horizon_days,
            "tz": cfg.default_timezone,
            "shift": window.shift.days,
            "max": window.max_instances,
            "cap": self.settings.max_instances_per_calendar,
            "where": cfg.path or cfg.url,
        }
        return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]

    async def fetch(self, calendar: CalendarSpec, cursor: dict[str, Any] | None) -> AsyncIterator[SourceBatch]:
        cfg = self._by_id[calendar.id]
        window = self.window(cfg)
        prior = cursor or {}
        config = self._fingerprint(cfg, window)
        day = window.start.date().isoformat()
        # A file without recurring series lists the same events whatever the window.
        reusable = prior.get("config") == config and (prior.get("recurring") is False or prior.get("window") == day)
        if cfg.path is not None:
            data, validators = await read_file(
                Path(cfg.path).expanduser(), max_bytes=self.settings.max_bytes, known=prior if reusable else None
            )
        else:
            data, validators = await download(
                cfg.url or "",
                max_bytes=self.settings.max_bytes,
                timeout=self.settings.timeout_seconds,
                max_redirects=self.settings.max_redirects,
                etag=prior.get("etag") if reusable else None,
                last_modified=prior.get("last_modified") if reusable else None,
                proxy=self.settings.proxy,
                outbound=self.outbound,
            )
        if data is None:
            yield SourceBatch(not_modified=True)
            return
        content_type = validators.pop("content_type", None)
        digest = hashlib.sha256(data).hexdigest()
        new_cursor: dict[str, Any] = {**validators, "sha256": digest, "config": config, "window": day}
        if reusable and prior.get("sha256") == digest:
            yield SourceBatch(not_modified=True, cursor={**new_cursor, "recurring": prior.get("recurring")})
            return
        if not data.strip():
            raise SourceError("the calendar is empty (0 bytes of iCalendar); keeping the last good data")
        key = (self.name, cfg.id)
        try:
            split = await ical.expansion().run(key, lambda: ical.split_calendar(ical.decode(data)))
        except ical.CalendarFormatError as exc:
            hint = f" (the server sent Content-Type: {content_type})" if content_type else ""
            raise SourceError(f"{exc}{hint}") from None
        new_cursor["recurring"] = split.recurring
        async for batch in self._batches(split, window, new_cursor, key):
            yield batch

    async def _batches(
        self, split: ical.Split, window: ical.Window, cursor: dict[str, Any], key: tuple[str, str]
    ) -> AsyncIterator[SourceBatch]:
        """Batches of what the parser yields, streamed while the calendar stays within
        ``max_instances_per_calendar``. Past it, the rest is held back: the first that
        many instances in time order are synced, those sent earlier that fall beyond
        them are deleted again, and the run reports an error."""
        size = self.settings.batch_size
        cap = self.settings.max_instances_per_calendar
        drafts: list[EventDraft] = []
        deleted: list[tuple[str, str]] = []
        errors: list[tuple[str, str]] = []
        sent: list[tuple[datetime, str, str]] = []
        held: list[EventDraft] | None = None
        total = 0
        async for parsed in self._parse(split, window, key):
            deleted += parsed.deleted
            errors += parsed.errors
            total += len(parsed.drafts)
            if held is None and total > cap:
                held = drafts
                drafts = []
            if held is not None:
                held += parsed.drafts
                continue
            drafts += parsed.drafts
            while len(drafts) >= size:
                sent.extend(_order_key(d) for d in drafts[:size])
                yield SourceBatch(drafts=drafts[:size], deleted=deleted, errors=errors, full=True)
                drafts, deleted, errors = drafts[size:], [], []
        if held is not None:
            drafts, dropped, last = _first_in_time(sent, held, cap)
            deleted += dropped
            errors.append(
                (
                    OVER_CAP_UID,
                    f"the calendar expands to {total} events and instances inside the sync window, more than"
                    f" ics.max_instances_per_calendar ({cap}); synced the first {cap} in time order"
                    f" (up to {last.isoformat()}); narrow the window (horizon_days, past_days) or raise the limit",
                )
            )
            while len(drafts) > size:
                yield SourceBatch(drafts=drafts[:size], deleted=deleted, errors=errors, full=True)
                drafts, deleted, errors = drafts[size:], [], []
        yield SourceBatch(drafts=drafts, deleted=deleted, errors=errors, full=True, complete=True, cursor=cursor)

    async def _parse(self, split: ical.Split, window: ical.Window, key: tuple[str, str]) -> AsyncIterator[ical.Parsed]:
        """Parsed chunks in order. Large files go to the worker processes, at most one chunk
        per worker in flight for this calendar, so that other calendars' chunks queue
        between them; smaller ones to the kernel's expansion threads (a calendar gets its
        share of them, see ``sync.expansion_threads``)."""
        workers = self.workers
        x_wr = split.x_wr_timezone
        if workers > 0 and split.entries >= self.settings.parallel_threshold:
            # Several chunks per worker keep every core busy while the first results are stored.
            per_chunk = max(200, min(2000, split.entries // (workers * 4) or 1))
            loop = asyncio.get_running_loop()
            pool = self._executor()
            todo = iter(ical.chunks(split.groups, per_chunk))
            futures: deque[asyncio.Future[ical.Parsed]] = deque()
            try:
                while True:
                    while len(futures) < workers and (chunk := next(todo, None)) is not None:
                        futures.append(loop.run_in_executor(pool, ical.parse_groups, split.prefix, chunk, window, x_wr))
                    if not futures:
                        return
                    yield await futures.popleft()
            finally:
                for fut in futures:
                    fut.cancel()
        expansion = ical.expansion()
        for chunk in ical.chunks(split.groups, 1000):
            yield await expansion.run(key, ical.parse_groups, split.prefix, chunk, window, x_wr)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: workers never inherit the service's threads, sockets or event loop.
            # Preloading the parser (instead of the default, __main__) makes workers start fast.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["chronos.contracts.ical", "icalendar", "recurring_ical_events"])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        return self._pool
