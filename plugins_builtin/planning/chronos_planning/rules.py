"""Which events block time and which pairs conflict: pure functions, no database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from chronos_planning.settings import PlanningSettings

#: Why a pair conflicts.
AUTO_PLAN = "auto-plan"  # one of them is planned: it may overlap nothing busy
ALL_OVERLAPS = "all-overlaps"  # both free, but a calendar reports every overlap


class Busy(NamedTuple):
    """An event as far as planning cares (a named tuple: a proposal builds thousands)."""

    id: int
    calendar_id: str
    start: datetime
    end: datetime
    mode: str | None  # the event's own mode: "free", "auto-plan", or None (its calendar's default)
    all_day: bool = False
    busy: bool = True  # transparency busy
    cancelled: bool = False
    title: str = ""
    source: str = ""


class Roles:
    """Each event's part in conflicts under one settings object, with the calendar policies looked
    up once per calendar (the sink classifies thousands of events per batch)."""

    __slots__ = ("_calendars", "settings")

    def __init__(self, settings: PlanningSettings) -> None:
        self.settings = settings
        self._calendars: dict[str, tuple[bool, bool, bool, bool]] = {}

    def _calendar(self, calendar_id: str) -> tuple[bool, bool, bool, bool]:
        known = self._calendars.get(calendar_id)
        if known is None:
            p = self.settings.policy(calendar_id)
            known = (p.counts_for_conflicts, p.all_day_blocks, p.default_mode == AUTO_PLAN, p.report_all_overlaps)
            self._calendars[calendar_id] = known
        return known

    def of(self, event: Busy) -> tuple[bool, bool, bool]:
        """``(blocks, planned, reports)``: whether the event takes part in conflicts and blocks
        proposals at all (busy, not cancelled, its calendar counts, all-day only where the calendar
        says all-day events block); whether it is planned (its own mode is auto-plan, or it sets
        none and its calendar plans every event); whether its calendar reports every overlap."""
        counts, all_day_blocks, planned, reports = self._calendar(event.calendar_id)
        blocking = (
            counts
            and event.busy
            and not event.cancelled
            and event.end > event.start
            and (not event.all_day or all_day_blocks)
        )
        return blocking, event.mode == AUTO_PLAN or (planned and event.mode is None), reports

    def blocking(self, events: Sequence[Busy], exclude: int | None = None) -> list[Busy]:
        """The events that block (``of(e)[0]``), without ``exclude``: one pass, for thousands."""
        policies = [(cal, self._calendar(cal)) for cal in {e.calendar_id for e in events}]
        counting = {cal for cal, p in policies if p[0]}
        all_day = {cal for cal, p in policies if p[0] and p[1]}
        return [
            e
            for e in events
            if e.calendar_id in counting
            and e.busy
            and not e.cancelled
            and e.end > e.start
            and e.id != exclude
            and (not e.all_day or e.calendar_id in all_day)
        ]


def conflict_reason(a: tuple[bool, bool, bool], b: tuple[bool, bool, bool]) -> str | None:
    """Why two overlapping events with these roles (``Roles.of``) conflict, or None: both must
    block; a planned one conflicts with anything; two free ones only where a calendar reports all."""
    if not (a[0] and b[0]):
        return None
    if a[1] or b[1]:
        return AUTO_PLAN
    if a[2] or b[2]:
        return ALL_OVERLAPS
    return None


def effective_mode(event: Busy, settings: PlanningSettings) -> str:
    """auto-plan when the event says so, or says nothing and its calendar plans every event."""
    return AUTO_PLAN if Roles(settings).of(event)[1] else "free"


def blocks(event: Busy, settings: PlanningSettings) -> bool:
    """Whether the event takes part in conflicts and blocks proposals at all."""
    return Roles(settings).of(event)[0]


def merge_intervals(intervals: list[tuple[datetime, datetime]], limit: int) -> list[tuple[datetime, datetime]]:
    """Sorted, merged intervals; at most ``limit`` of them (the closest neighbours merge first)."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    if len(merged) > limit:
        # Keep the limit - 1 widest gaps (the earliest among equals); close every other one.
        gaps = sorted(range(len(merged) - 1), key=lambda i: (merged[i][1] - merged[i + 1][0], i))
        cuts = set(gaps[: max(0, limit - 1)])
        out: list[tuple[datetime, datetime]] = []
        start, end = merged[0]
        for i in range(1, len(merged)):
            if i - 1 in cuts:
                out.append((start, end))
                start = merged[i][0]
            end = max(end, merged[i][1])
        out.append((start, end))
        merged = out
    return merged
