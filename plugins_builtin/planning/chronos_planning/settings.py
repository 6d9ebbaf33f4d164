"""Section ``planning:`` in config/chronos.yaml."""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$|^24:00$")


def minutes_of(clock: str) -> int:
    """``"09:30"`` → 570; ``"24:00"`` → 1440."""
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class TimeRange(BaseModel):
    """Local wall-clock hours of one day, ``start`` inclusive, ``end`` exclusive."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field(pattern=_CLOCK.pattern, description="HH:MM, local time.", examples=["09:00"])
    end: str = Field(pattern=_CLOCK.pattern, description="HH:MM, local time (24:00: midnight).", examples=["17:00"])

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if minutes_of(self.end) <= minutes_of(self.start):
            raise ValueError(f"working hours end ({self.end}) before they start ({self.start})")
        return self


def _office_day() -> list[TimeRange]:
    return [TimeRange(start="09:00", end="17:00")]


class Week(BaseModel):
    """Working hours per weekday; a day left out keeps its default (Mon–Fri 09:00–17:00, none at weekends),
    an empty list has none."""

    model_config = ConfigDict(extra="forbid")

    mon: list[TimeRange] = Field(default_factory=_office_day, max_length=24)
    tue: list[TimeRange] = Field(default_factory=_office_day, max_length=24)
    wed: list[TimeRange] = Field(default_factory=_office_day, max_length=24)
    thu: list[TimeRange] = Field(default_factory=_office_day, max_length=24)
    fri: list[TimeRange] = Field(default_factory=_office_day, max_length=24)
    sat: list[TimeRange] = Field(default_factory=list, max_length=24)
    sun: list[TimeRange] = Field(default_factory=list, max_length=24)

    def on(self, weekday: int) -> list[TimeRange]:
        """The ranges of ``date.weekday()`` (0 = Monday)."""
        ranges: list[TimeRange] = getattr(self, WEEKDAYS[weekday])
        return ranges

    @model_validator(mode="after")
    def _disjoint(self) -> Week:
        for day in WEEKDAYS:
            spans = sorted((minutes_of(r.start), minutes_of(r.end)) for r in getattr(self, day))
            for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False):
                if s2 < e1:
                    raise ValueError(f"the hours of {day} overlap")
        return self


class WorkingHours(BaseModel):
    """When slots may be proposed: weekly hours in a named time zone, holidays, buffers, notice."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = Field("UTC", max_length=64, description="IANA time zone of the weekly hours.")
    weekly: Week = Field(
        default_factory=Week,
        description="Hours per weekday (mon … sun); a day left out keeps its default, [] has none.",
    )
    holidays_calendar: str | None = Field(
        None, max_length=200, description="The all-day events of this calendar are days off."
    )
    buffer_before_minutes: int = Field(0, ge=0, le=1440, description="Free time kept before every busy event.")
    buffer_after_minutes: int = Field(0, ge=0, le=1440, description="Free time kept after every busy event.")
    min_notice_minutes: int = Field(0, ge=0, le=525_600, description="No slot starts sooner than this from now.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not known_zone(value):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)")
        return value


class CalendarPolicy(BaseModel):
    """How one calendar takes part in conflicts and planning."""

    model_config = ConfigDict(extra="forbid")

    default_mode: Literal["free", "auto-plan"] = Field(
        "free",
        description="The mode of its events that set none. free: they may overlap others; auto-plan: they are"
        " planned (conflict with every busy event they overlap). An event's own mode (free or auto-plan) wins.",
    )
    counts_for_conflicts: bool = Field(True, description="false: its events neither block nor conflict.")
    report_all_overlaps: bool = Field(
        False, description="Report overlaps of its events even when both are in free mode."
    )
    all_day_blocks: bool = Field(False, description="Its all-day events block time (otherwise they are ignored).")
    working_hours: WorkingHours | None = Field(
        None, description="Working hours for proposals over this calendar (default: planning.working_hours)."
    )


class PlanningSettings(BaseModel):
    """Conflicts, working hours and proposals."""

    model_config = ConfigDict(extra="forbid")

    defaults: CalendarPolicy = Field(
        default_factory=CalendarPolicy, description="The policy of every calendar not listed in `calendars`."
    )
    calendars: dict[str, CalendarPolicy] = Field(default_factory=dict, description="Policies per calendar id.")
    working_hours: WorkingHours = Field(default_factory=WorkingHours, description="Global working hours.")
    slot_step_minutes: int = Field(15, ge=1, le=240, description="Proposed slots start on this local grid.")
    max_window_days: int = Field(
        92, ge=1, le=3660, description="The longest window of a proposal request and of GET /api/v1/conflicts."
    )
    max_proposals: int = Field(50, ge=1, le=500, description="The most slots one proposal request may ask for.")
    reschedule_window_days: int = Field(
        14, ge=1, le=366, description="Proposals for a conflicting event look this many days ahead of it."
    )

    def policy(self, calendar_id: str) -> CalendarPolicy:
        return self.calendars.get(calendar_id, self.defaults)
