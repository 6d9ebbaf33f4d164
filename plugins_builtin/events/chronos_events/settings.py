"""Section ``events:`` in config/chronos.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EventsSettings(BaseModel):
    """Settings of the event store and its API."""

    model_config = ConfigDict(extra="forbid")

    local_calendars: list[str] = Field(
        default_factory=lambda: ["local"],
        description="Writable calendars of the built-in source `local`: POST /api/v1/events creates events here.",
    )
    feed_past_days: int = Field(
        90, ge=0, le=3650, description="ICS feeds include events that ended this many days ago."
    )
    feed_future_days: int = Field(
        400, ge=1, le=3650, description="ICS feeds include events starting up to this many days ahead."
    )
    feed_token_days: int = Field(
        365, ge=1, le=36500, description="Feed tokens expire after this many days unless created with a shorter life."
    )
    feed_token_max_days: int = Field(
        730, ge=1, le=36500, description="The longest life a feed token may be created with (`expires_in_days`)."
    )
    feed_series: bool = Field(
        False,
        description="ICS feeds publish recurring series as series (RRULE, EXDATE, overrides) by default"
        " (`?series=` overrides it per request); otherwise as expanded instances.",
    )
    import_max_bytes: int = Field(
        50 * 1024 * 1024,
        ge=1024,
        description="Largest accepted body of POST /api/v1/events/import (also bounded by server.max_body_bytes).",
    )
    import_max_events: int = Field(200_000, ge=1, description="Most events one import may contain.")
    query_max_window_days: int = Field(
        366,
        ge=1,
        le=3_660_000,
        description="GET /api/v1/events with analytics=true or text: the longest window (from/to) allowed;"
        " an open side is closed this many days from the other.",
    )
    query_timeout_ms: int = Field(
        5000,
        ge=1,
        le=600_000,
        description="Analytics and text searches stop after this long (PostgreSQL statement_timeout, a SQLite"
        " progress handler) and answer 503, saying what to narrow.",
    )
    inline_read_budget_ms: float = Field(
        8.0,
        ge=0,
        le=1000,
        description="SQLite: list pages run on the event loop for up to this long, then move to a thread (0: always a thread).",
    )
