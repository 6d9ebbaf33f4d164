"""The ``google`` source: Google calendars synced with sync tokens.

The first run (and every run after a 410 Gone) is a full listing:
``singleEvents=true`` over the configured window, every ``nextPageToken``
followed, each page one batch with ``full=True``; the ``nextSyncToken`` of the
last page is the cursor of the last batch (``complete=True``), so the pipeline
saves it in the same transaction as that batch, and only then deletes the
local events the listing did not contain. Later runs send ``syncToken``
only: the pages carry what changed, cancelled items (and cancelled
instances) become deletions. While one page is being stored the next one is
already downloading.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from chronos.plugin import (
    CalendarSpec,
    OutboundPolicy,
    OutboundRefused,
    Source,
    SourceBatch,
    SourceError,
    check_outbound,
)

from chronos_google.client import CalendarClient, Retry, SyncTokenGone
from chronos_google.convert import Page, convert, instance_id
from chronos_google.settings import GoogleCalendarConfig, GoogleSettings


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GoogleSource(Source):
    """Google Calendar v3 through gcsa, one client per configured calendar."""

    name = "google"

    def __init__(
        self,
        settings: GoogleSettings,
        ctx: Any = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.ctx = ctx
        self.clock = clock or (lambda: datetime.now(UTC))
        self.sleep = sleep
        self._by_id = {c.id: c for c in settings.calendars}
        self._clients: dict[str, CalendarClient] = {}
        self._pool: ThreadPoolExecutor | None = None

    def calendars(self) -> list[CalendarSpec]:
        return [
            CalendarSpec(
                c.id,
                interval_seconds=c.interval_seconds,
                read_only=c.read_only,
                options={
                    "name": c.name or c.id,
                    "calendar_id": c.calendar_id,
                    "horizon_days": c.horizon_days,
                    "past_days": c.past_days,
                },
            )
            for c in self.settings.calendars
        ]

    def client(self, cfg: GoogleCalendarConfig) -> CalendarClient:
        found = self._clients.get(cfg.id)
        if found is None:
            s = self.settings
            found = self._clients[cfg.id] = CalendarClient(
                s.credentials_of(cfg),
                cfg.calendar_id,
                base_url=s.api_base_url,
                timeout=s.timeout_seconds,
                retry=Retry(s.max_retries, s.backoff_base_seconds, s.backoff_max_seconds),
                write=not cfg.read_only,
                sleep=self.sleep,
                executor=self._executor(),
                policy=self._policy(),
            )
        return found

    def _policy(self) -> OutboundPolicy | None:
        """With an overridden API address, the outbound guard every connection of the clients goes through."""
        if self.settings.api_base_url is None or self.ctx is None:
            return None
        return OutboundPolicy.from_settings(self.ctx.settings)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            # A calendar runs one request at a time (a sync's next page, or a deletion waiting for it).
            workers = max(2, min(16, 2 * len(self.settings.calendars)))
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chronos-google")
        return self._pool

    async def aclose(self) -> None:
        self._clients.clear()
        if self._pool is not None:
            # A request still waiting on a silent server ends with its socket timeout; nobody waits for it.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _check_outbound(self) -> None:
        """An overridden API address goes through the kernel's outbound policy, right before connecting."""
        url = self.settings.api_base_url
        if url is None or self.ctx is None:
            return
        try:
            await check_outbound(self.ctx, url)
        except OutboundRefused as exc:
            raise SourceError(f"google.api_base_url is refused by the outbound network policy: {exc}") from None

    # -- one sync ---------------------------------------------------------------------

    async def fetch(self, calendar: CalendarSpec, cursor: dict[str, Any] | None) -> AsyncIterator[SourceBatch]:
        cfg = self._by_id[calendar.id]
        await self._check_outbound()
        client = self.client(cfg)
        token = None
        if cursor and cursor.get("calendar") == cfg.calendar_id:
            token = cursor.get("sync_token")
        try:
            if token:
                try:
                    async for batch in self._pages(client, cfg, token):
                        yield batch
                    return
                except SyncTokenGone:
                    pass  # the token expired or was refused: list everything again below
            try:
                async for batch in self._pages(client, cfg, None):
                    yield batch
            except SyncTokenGone as exc:
                raise SourceError(f"listing events of {cfg.calendar_id!r}: {exc} to a full listing") from None
        except SourceError:
            # Credentials may have been renewed on disk since: read them again next time.
            self._clients.pop(cfg.id, None)
            raise

    async def _pages(
        self, client: CalendarClient, cfg: GoogleCalendarConfig, token: str | None
    ) -> AsyncIterator[SourceBatch]:
        full = token is None
        params: dict[str, Any] = {"singleEvents": True, "maxResults": self.settings.page_size}
        if token:
            params["syncToken"] = token
        else:
            now = self.clock()
            params["timeMin"] = _rfc3339(now - timedelta(days=cfg.past_days))
            params["timeMax"] = _rfc3339(now + timedelta(days=cfg.horizon_days))
        pending: asyncio.Task[tuple[dict[str, Any], Page]] | None = asyncio.create_task(self._page(client, cfg, params))
        try:
            while pending is not None:
                body, page = await pending
                pending = None
                page_token = body.get("nextPageToken")
                if page_token:
                    # Download and read the next page while this one is stored.
                    pending = asyncio.create_task(self._page(client, cfg, {**params, "pageToken": str(page_token)}))
                last = not page_token
                new_cursor = None
                if last and body.get("nextSyncToken"):
                    new_cursor = {
                        "sync_token": str(body["nextSyncToken"]),
                        "calendar": cfg.calendar_id,
                        "issued_at": _rfc3339(self.clock()),
                    }
                yield SourceBatch(
                    drafts=page.drafts,
                    deleted=page.deleted,
                    errors=page.errors,
                    cursor=new_cursor,
                    full=full,
                    complete=full and last,
                )
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    async def _page(
        self, client: CalendarClient, cfg: GoogleCalendarConfig, params: dict[str, Any]
    ) -> tuple[dict[str, Any], Page]:
        """One page, listed and converted off the event loop (the conversion overlaps the store's writes)."""
        body = await client.list_page(params)
        items = body.pop("items", None) or []
        if not isinstance(items, list):
            raise SourceError(f"listing events of {cfg.calendar_id!r}: `items` is not a list")
        zone = body.get("timeZone") if isinstance(body.get("timeZone"), str) else None
        page = await asyncio.get_running_loop().run_in_executor(client.executor, convert, items, zone)
        return body, page

    # -- write-back -------------------------------------------------------------------

    def can_delete(self, calendar: CalendarSpec) -> bool:
        cfg = self._by_id.get(calendar.id)
        return cfg is not None and not cfg.read_only

    async def delete_entry(self, calendar: CalendarSpec, uid: str, recurrence_id: str = "") -> None:
        cfg = self._by_id.get(calendar.id)
        if cfg is None:
            raise SourceError(f"google has no calendar {calendar.id!r}")
        if cfg.read_only:
            raise SourceError(f"calendar {calendar.id!r} is read-only (google.calendars[].read_only)")
        await self._check_outbound()
        # 404 and 410 mean someone deleted it already: done.
        await self.client(cfg).delete(instance_id(uid, recurrence_id))
