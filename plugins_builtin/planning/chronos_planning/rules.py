"""Which events block time and which pairs conflict: pure functions, no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chronos_planning.settings import PlanningSettings

#: Why a pair conflicts.
AUTO_PLAN = "auto-plan"  # one of them is planned: it may overlap nothing busy
ALL_OVERLAPS = "all-overlaps"  # both free, but a calendar reports every overlap


@dataclass(frozen=True, slots=True)
class Busy:
    """An event as far as planning cares."""

    id: int
    calendar_id: str
    start: datetime
    end: datetime
    mode: str  # the stored mode: "free" or "auto-plan"
    all_day: bool = False
    busy: bool = True  # transparency busy
    cancelled: bool = False
    title: str = ""
    source: str = ""


def effective_mode(event: Busy, settings: PlanningSettings) -> str:
    """auto-plan when the event says so or its calendar plans every event."""
    if event.mode == AUTO_PLAN:
        return AUTO_PLAN
    return settings.policy(event.calendar_id).default_mode


def blocks(event: Busy, settings: PlanningSettings) -> bool:
    """Whether the event takes part in conflicts and blocks proposals at all."""
    if not event.busy or event.cancelled or event.end <= event.start:
        return False
    policy = settings.policy(event.calendar_id)
    return policy.counts_for_conflicts and (not event.all_day or policy.all_day_blocks)


def reaches_free_events(event: Busy, settings: PlanningSettings) -> bool:
    """Whether the event can conflict with a free event (it is planned, or its calendar reports every overlap)."""
    return effective_mode(event, settings) == AUTO_PLAN or settings.policy(event.calendar_id).report_all_overlaps


def conflict_reason(a: Busy, b: Busy, settings: PlanningSettings) -> str | None:
    """Why ``a`` and ``b`` conflict, or None. Both must block; touching ends do not overlap."""
    if a.id == b.id or not (a.start < b.end and b.start < a.end):
        return None
    if not (blocks(a, settings) and blocks(b, settings)):
        return None
    if effective_mode(a, settings) == AUTO_PLAN or effective_mode(b, settings) == AUTO_PLAN:
        return AUTO_PLAN
    if settings.policy(a.calendar_id).report_all_overlaps or settings.policy(b.calendar_id).report_all_overlaps:
        return ALL_OVERLAPS
    return None


def merge_intervals(intervals: list[tuple[datetime, datetime]], limit: int) -> list[tuple[datetime, datetime]]:
    """Sorted, merged intervals; at most ``limit`` of them (the closest neighbours merge first)."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    while len(merged) > limit:
        gaps = sorted(range(len(merged) - 1), key=lambda i: (merged[i + 1][0] - merged[i][1], i))
        # Close the smaller half of the gaps at once (keeps this linearithmic for big batches).
        close = set(gaps[: max(1, len(merged) - limit)])
        out: list[tuple[datetime, datetime]] = [merged[0]]
        for i in range(1, len(merged)):
            if i - 1 in close:
                out[-1] = (out[-1][0], max(out[-1][1], merged[i][1]))
            else:
                out.append(merged[i])
        merged = out
    return merged
