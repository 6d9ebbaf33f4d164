"""Request bodies of the event API (their class names are the OpenAPI schema names)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator

from chronos.plugin import refuse_null, setting_enum

MAX_ID = 2**63 - 1
Text200 = Annotated[str, StringConstraints(min_length=1, max_length=200)]
LinkType = Literal["blocks", "relates", "follows"]


class EventCreate(BaseModel):
    """A new event in a local calendar; it runs through the sync pipeline."""

    model_config = ConfigDict(extra="forbid")

    calendar_id: Text200 | None = Field(
        None,
        description="A local calendar (default: the first configured).",
        json_schema_extra=setting_enum("events.local_calendars"),
    )
    title: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    description: str = Field("", max_length=100_000)
    location: str = Field("", max_length=2000)
    start: AwareDatetime | date = Field(description="ISO 8601 with offset, or a date for an all-day event.")
    end: AwareDatetime | date | None = Field(None, description="Exclusive; default from the normalisers.")
    timezone: str | None = Field(None, max_length=64, description="Original time zone (IANA name).")
    status: Literal["confirmed", "tentative", "cancelled"] = "confirmed"
    transparency: Literal["busy", "free"] = "busy"
    mode: Literal["free", "auto-plan"] | None = Field(
        None, description="free or auto-plan; left out or null: the calendar's default mode (planning)."
    )
    tags: list[Text200] = Field(default_factory=list, max_length=50)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SubTaskDone(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    done: StrictBool


class EventPatch(BaseModel):
    """Fields to change; ``sub_tasks`` sets done flags by id; ``metadata`` is merged (null removes a key).

    Changing ``title``, ``description`` or ``location`` runs the event through
    the enrichers again, as on creation: ``#tags``, keyword labels and the
    checklist follow the new text. Items still on the checklist keep their
    done flags unless the new text changes their box. Tags the old text
    implied are replaced by those the new text implies; other tags stay.
    ``tags``, ``sub_tasks`` and ``metadata`` given in the same request win
    over what is derived (``tags`` are then stored exactly as given).
    Normalisers and sinks do not run: an edited ``ACTION:``/``NOTIZ:`` title
    gets its ``command_hint`` but is not consumed.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=refuse_null(
            "title",
            "description",
            "location",
            "start_utc",
            "end_utc",
            "all_day",
            "status",
            "transparency",
            "tags",
            "sub_tasks",
            "metadata",
        ),
    )

    title: str | None = Field(None, max_length=2000)
    description: str | None = Field(None, max_length=100_000)
    location: str | None = Field(None, max_length=2000)
    start_utc: AwareDatetime | None = None
    end_utc: AwareDatetime | None = None
    all_day: StrictBool | None = None
    start_date: date | None = None
    end_date: date | None = None

    @field_validator("start_utc", "end_utc", "start_date", "end_date", mode="before")
    @classmethod
    def _iso_strings_only(cls, value: object) -> object:
        # The document says an ISO string; a number is no date or time (lax mode would read a timestamp).
        if value is not None and not isinstance(value, (str, date)):
            raise ValueError("must be an ISO 8601 string")
        return value

    timezone: str | None = Field(None, max_length=64)
    status: Literal["confirmed", "tentative", "cancelled"] | None = None
    transparency: Literal["busy", "free"] | None = None
    mode: Literal["free", "auto-plan"] | None = Field(None, description="null: back to the calendar's default mode.")
    tags: list[Text200] | None = Field(None, max_length=50)
    sub_tasks: list[SubTaskDone] | None = Field(None, max_length=500)
    metadata: dict[str, Any] | None = None


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_event_id: int = Field(ge=1, le=MAX_ID)
    type: LinkType
