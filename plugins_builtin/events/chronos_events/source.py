"""The built-in source ``local``: calendars whose events live only here.

Events reach a local calendar through ``POST /api/v1/events`` (the pipeline's
intake), imports or other plugins; there is nothing to fetch, so local calendars have no schedule
(``interval_seconds=0``) and a sync started by hand reports "not modified" and
never deletes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from chronos.plugin import CalendarSpec, Source, SourceBatch

LOCAL_SOURCE = "local"


class LocalSource(Source):
    """Read-write calendars stored only in this database."""

    name = LOCAL_SOURCE

    def __init__(self, calendar_ids: list[str]) -> None:
        self._calendars = [CalendarSpec(cid, interval_seconds=0, read_only=False) for cid in calendar_ids]

    def calendars(self) -> list[CalendarSpec]:
        return list(self._calendars)

    async def fetch(self, calendar: CalendarSpec, cursor: dict[str, Any] | None) -> AsyncIterator[SourceBatch]:
        # The store is the calendar: a full listing would be empty and delete everything.
        yield SourceBatch(not_modified=True, cursor=cursor)

    def can_delete(self, calendar: CalendarSpec) -> bool:
        return True

    async def delete_entry(self, calendar: CalendarSpec, uid: str, recurrence_id: str = "") -> None:
        """Nothing to do upstream: the caller removes the stored row itself."""
        return None
