"""The ``ics:`` settings section."""

from __future__ import annotations

import os
from datetime import date
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

CalendarId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")]


class IcsCalendar(BaseModel):
    """One calendar: a local file (``path``) or an http(s) feed (``url``)."""

    model_config = ConfigDict(extra="forbid")

    id: CalendarId = Field(description="The calendar's id in events, runs and the API (letters, digits, `_.@-`).")
    path: str | None = Field(None, description="An .ics file; relative paths start at the working directory.")
    url: str | None = Field(None, description="An http(s) URL of an .ics feed (tokens in it are never logged).")
    interval_seconds: float = Field(900, ge=0, description="How often to sync; 0 = only on demand.")
    horizon_days: int = Field(365, ge=1, le=3650, description="Expand recurring events this many days ahead.")
    past_days: int = Field(90, ge=0, le=3650, description="…and this many days back.")
    read_only: bool = Field(True, description="ICS calendars cannot be written back; kept for the source contract.")
    default_timezone: str | None = Field(
        None, description="Zone of floating times when the file has no X-WR-TIMEZONE (default: normalize's)."
    )
    demo_week: date | None = Field(
        None,
        description="Demo only: move every entry by whole weeks so that the week of this date is the current week.",
    )

    @model_validator(mode="after")
    def _one_location(self) -> IcsCalendar:
        if (self.path is None) == (self.url is None):
            raise ValueError(f"calendar {self.id!r}: give exactly one of `path` or `url`")
        return self

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("only http:// and https:// URLs are supported (webcal:// → https://)")
        return value

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value


def default_workers() -> int:
    return min(os.cpu_count() or 1, 4)


class IcsSettings(BaseModel):
    """Section ``ics:`` in config/chronos.yaml."""

    model_config = ConfigDict(extra="forbid")

    calendars: list[IcsCalendar] = Field(default_factory=list, description="The calendars to sync.")
    max_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Larger files and feeds are refused.")
    timeout_seconds: float = Field(30, gt=0, le=600, description="Total time allowed for one download.")
    max_redirects: int = Field(5, ge=0, le=20, description="Redirects followed before giving up.")
    proxy: str | None = Field(
        None,
        description="An http:// or https:// proxy URL for feed downloads. Proxy environment variables"
        " (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) are ignored; without this, feeds are fetched directly.",
    )
    batch_size: int = Field(500, ge=1, le=10_000, description="Events per pipeline batch (one transaction each).")
    parse_workers: int | None = Field(
        None,
        ge=0,
        le=32,
        description="Processes parsing large files in parallel (default: one per CPU core, at most 4);"
        " 0 parses in a thread of the service.",
    )
    parallel_threshold: int = Field(
        2000, ge=1, description="Files with at least this many entries are parsed by the worker processes."
    )
    max_instances_per_event: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="A recurring event expanding to more instances inside the window is reported as an error.",
    )
    max_instances_per_calendar: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="A calendar expanding to more events and instances inside the window syncs the first this many"
        " in time order; the run reports the rest as an error.",
    )

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("give the proxy as an http:// or https:// URL, e.g. http://proxy.internal:3128")
        return value

    @field_validator("calendars")
    @classmethod
    def _unique(cls, value: list[IcsCalendar]) -> list[IcsCalendar]:
        seen: set[str] = set()
        for cal in value:
            if cal.id in seen:
                raise ValueError(f"calendar id {cal.id!r} appears twice")
            seen.add(cal.id)
        return value
