"""Request and response bodies of the planning API."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from chronos_planning.settings import WorkingHours


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: AwareDatetime = Field(alias="from", description="Window start, ISO 8601 with offset.")
    end: AwareDatetime = Field(alias="to", description="Window end (exclusive), ISO 8601 with offset.")


class ProposalRequest(BaseModel):
    """What to plan: a duration inside a window, respecting the free/busy time of some calendars."""

    model_config = ConfigDict(extra="forbid")

    duration_minutes: int = Field(gt=0, le=525_600, description="Length of the slot in minutes.")
    window: Window
    calendars: list[str] = Field(
        min_length=1, max_length=50, description="Calendar ids whose busy events the slots avoid."
    )
    working_hours: WorkingHours | None = Field(
        None, description="Working hours for this request (default: the first calendar's, else planning.working_hours)."
    )
    count: int = Field(5, ge=1, le=500, description="How many slots (at most planning.max_proposals).")


class Avoided(BaseModel):
    event_id: int
    title: str
    calendar_id: str
    start_utc: str
    end_utc: str
    slot_is: Literal["before", "after"] = Field(description="Where the slot lies relative to this event.")


class SlotOut(BaseModel):
    id: str = Field(description="Pass it to POST /api/v1/events/{id}/reschedule.")
    rank: int
    start_utc: str
    end_utc: str
    local_start: str = Field(description="The start in the working hours' time zone, with its offset.")
    explanation: list[str]
    avoided: list[Avoided]


class ProposalsOut(BaseModel):
    items: list[SlotOut]
    timezone: str
    working_hours_from: str = Field(description="request, calendar:<id> or global.")


class EventProposalsOut(ProposalsOut):
    event_id: int
    mode: Literal["free", "auto-plan"] = Field(description="The mode in force: the event's own, or its calendar's.")
    movable: bool = Field(description="Whether POST …/reschedule can move it (events of local calendars only).")
    conflicts: list[int] = Field(description="Ids of the events it conflicts with now.")


class RescheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    proposal: str = Field(min_length=1, max_length=64, description="The id of a proposal of this event.")


class ConflictEvent(BaseModel):
    id: int
    calendar_id: str
    source: str
    title: str
    start_utc: str
    end_utc: str
    mode: str | None = Field(description="The event's own mode; null: its calendar's default.")


class Interval(BaseModel):
    start: str
    end: str


class ConflictOut(BaseModel):
    id: str = Field(description="The pair, `<lower event id>:<higher event id>`; stable while the events conflict.")
    event_ids: list[int]
    events: list[ConflictEvent]
    overlap: Interval
    reason: Literal["auto-plan", "all-overlaps"]
    detected_at: str


class ConflictsPage(BaseModel):
    items: list[ConflictOut]
    next_cursor: str | None


class RescheduledOut(BaseModel):
    event_id: int
    start_utc: str
    end_utc: str
    previous: Interval


class ConflictPublished(BaseModel):
    """Payload of ``event.conflict``: a pair of events that newly conflict."""

    event_ids: list[int]
    events: list[dict[str, str | int]]
    overlap: Interval
    reason: Literal["auto-plan", "all-overlaps"]
