"""The analytics API: time allocation and the summary."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from chronos.plugin import Context, Principal, require_scope

from chronos_analytics import service
from chronos_analytics.schemas import Summary, TimeAllocation

router = APIRouter(prefix="/analytics", tags=["analytics"])
READ = require_scope("events.read")
INSTANT: dict[str, Any] = {"max_length": 64, "json_schema_extra": {"format": "date-time"}}
From = Annotated[
    str | None, Query(alias="from", description="Window start with offset (default: to - 30 days).", **INSTANT)
]
To = Annotated[str | None, Query(alias="to", description="Window end, exclusive (default: now).", **INSTANT)]
Zone = Annotated[
    str | None, Query(max_length=64, description="IANA time zone of the buckets (default: analytics.timezone).")
]
Calendars = Annotated[list[str], Query(max_length=100, description="Repeatable; default: every calendar.")]


@router.get(
    "/time-allocation",
    response_model=TimeAllocation,
    response_model_by_alias=True,
    summary="Minutes per tag, calendar, local weekday or local hour",
)
async def time_allocation(
    ctx: Context,
    start: From = None,
    end: To = None,
    group_by: Annotated[Literal["tag", "calendar", "weekday", "hour"], Query()] = "calendar",
    busy_only: Annotated[bool, Query(description="Only busy events (false: free ones too; never cancelled).")] = True,
    timezone: Zone = None,
    calendar_id: Calendars = [],  # noqa: B006 - FastAPI copies defaults
    _p: Principal = Depends(READ),
) -> Any:
    """Each event's time inside the window, split exactly at the buckets' local boundaries
    (a DST day has 23 or 25 hours; the repeated hour counts twice in its hour, the missing one not at all)."""
    return await service.time_allocation(ctx, start, end, group_by, timezone, calendar_id, busy_only)


@router.get(
    "/summary",
    response_model=Summary,
    response_model_by_alias=True,
    summary="Busy weeks, free blocks, chains, checklists",
)
async def summary(
    ctx: Context,
    start: From = None,
    end: To = None,
    timezone: Zone = None,
    calendar_id: Calendars = [],  # noqa: B006 - FastAPI copies defaults
    _p: Principal = Depends(READ),
) -> Any:
    """Busy hours per local week (overlaps counted once), the longest free block of each local day,
    back-to-back chains, the checklist completion rate, and the heavy days and long chains the
    follow-up rules flag (``analytics.followups``)."""
    return await service.summarize(ctx, start, end, timezone, calendar_id)
