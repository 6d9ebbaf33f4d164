"""The ``normalize:`` settings section."""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Tag = Annotated[str, StringConstraints(pattern=r"^[^\W_][\w-]{0,62}$", strip_whitespace=True, to_lower=True)]
Keyword = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]


class LabelRule(BaseModel):
    """Add ``tag`` to events whose chosen fields contain one of ``keywords`` as a whole word."""

    model_config = ConfigDict(extra="forbid")

    tag: Tag = Field(description="The tag to add (lower-case letters, digits, '_' and '-').")
    keywords: list[Keyword] = Field(min_length=1, max_length=200, description="Words or phrases; case-insensitive.")
    fields: list[Literal["title", "description", "location"]] = Field(
        default_factory=lambda: ["title", "description"], min_length=1, description="Where to look."
    )


class NormalizeSettings(BaseModel):
    """Section ``normalize:`` in config/chronos.yaml."""

    model_config = ConfigDict(extra="forbid")

    default_timezone: str = Field("UTC", description="IANA zone for naive (floating) times whose entry names no zone.")
    default_duration_minutes: int = Field(
        60, ge=0, le=7 * 24 * 60, description="Length of a timed entry that has neither an end nor a duration."
    )
    hashtags: bool = Field(True, description="Turn `#words` in title and description into tags.")
    checklists: bool = Field(True, description="Turn `[ ]`/`[x]` lines of descriptions into sub-tasks.")
    labels: list[LabelRule] = Field(
        default_factory=list, max_length=500, description="Keyword rules: `{tag, keywords, fields}`."
    )

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Europe/Berlin, America/New_York, UTC)") from None
        return value
