"""The planning API: conflicts, proposals, an event's proposals and rescheduling."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from chronos.plugin import Context, Principal, origin_of, require_scope

from chronos_planning import service
from chronos_planning.schemas import (
    ConflictsPage,
    EventProposalsOut,
    ProposalRequest,
    ProposalsOut,
    RescheduledOut,
    RescheduleRequest,
)

MAX_ID = 2**63 - 1
INSTANT: dict[str, Any] = {"max_length": 64, "json_schema_extra": {"format": "date-time"}}
EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="The event's id.")]

router = APIRouter(tags=["planning"])
READ = require_scope("events.read")
WRITE = require_scope("events.write")


@router.get("/conflicts", response_model=ConflictsPage, summary="Conflicting pairs of events in a window")
async def list_conflicts(
    ctx: Context,
    start: Annotated[
        str | None, Query(alias="from", description="Window start with offset (default: now).", **INSTANT)
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", description="Window end, exclusive (default: from + 7 days).", **INSTANT)
    ] = None,
    calendar_id: Annotated[
        list[str], Query(max_length=100, description="Repeatable: pairs with an event in one of these calendars.")
    ] = [],  # noqa: B006 - FastAPI copies defaults
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    _p: Principal = Depends(READ),
) -> Any:
    """Pairs whose overlap intersects ``[from, to)``, by overlap start, with the overlap and the reason:
    ``auto-plan`` (one of them is planned) or ``all-overlaps`` (a calendar reports every overlap)."""
    return await service.list_conflicts(ctx, start, end, calendar_id, cursor, limit)


@router.post("/plan/proposals", response_model=ProposalsOut, summary="Conflict-free slots for a duration")
async def propose(body: ProposalRequest, ctx: Context, _p: Principal = Depends(READ)) -> Any:
    """Ranked slots inside the window that avoid every busy event of the calendars (with buffers),
    lie in working hours, respect the minimum notice and skip holidays; each says what it avoided."""
    return await service.propose(ctx, body)


@router.get(
    "/events/{event_id:int}/proposals", response_model=EventProposalsOut, summary="Conflict-free slots for an event"
)
async def event_proposals(event_id: EventId, ctx: Context, _p: Principal = Depends(READ)) -> Any:
    """For an auto-plan event in conflict: slots of its length from its start over
    ``planning.reschedule_window_days``; events from external sources get proposals but are never moved."""
    return await service.event_proposals(ctx, event_id)


@router.post(
    "/events/{event_id:int}/reschedule",
    response_model=RescheduledOut,
    summary="Move a local event to one of its proposals",
    responses={409: {"description": "The event is not movable, or the proposal is no longer offered"}},
)
async def reschedule(
    event_id: EventId,
    body: RescheduleRequest,
    request: Request,
    ctx: Context,
    principal: Principal = Depends(WRITE),
) -> Any:
    return await service.reschedule(ctx, event_id, body.proposal, principal=principal, origin=origin_of(request))
