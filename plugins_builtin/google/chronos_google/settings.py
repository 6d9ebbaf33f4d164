"""The ``google:`` settings section.

Credentials are files (a service-account key, or an installed-app OAuth
client plus the token file ``chronos google auth`` writes); their contents are
read when a calendar syncs and never appear in settings dumps, logs or errors.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

CalendarId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")]

#: Scopes asked for: events only (read, or read and delete for write-back).
SCOPE_READ = "https://www.googleapis.com/auth/calendar.events.readonly"
SCOPE_WRITE = "https://www.googleapis.com/auth/calendar.events"


class GoogleCredentials(BaseModel):
    """Where the credentials are: a service-account key file, or an OAuth token file
    (with the installed-app client file that ``chronos google auth`` uses to create it)."""

    model_config = ConfigDict(extra="forbid")

    service_account_file: str | None = Field(
        None, description="A service-account key (JSON); share the calendar with the account's e-mail address."
    )
    subject: str | None = Field(
        None, description="With a service account: the user to act as (domain-wide delegation, Google Workspace)."
    )
    client_secrets_file: str | None = Field(
        None, description="An installed-app OAuth client (JSON, type Desktop app), used by `chronos google auth`."
    )
    token_file: str | None = Field(
        None, description="The refresh token `chronos google auth` writes (mode 0600) and the source reads."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> GoogleCredentials:
        if self.service_account_file and (self.token_file or self.client_secrets_file):
            raise ValueError("give either service_account_file or client_secrets_file + token_file, not both")
        if self.client_secrets_file and not self.token_file:
            raise ValueError("client_secrets_file needs token_file: where `chronos google auth` writes the token")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.service_account_file or self.token_file)


class GoogleCalendarConfig(BaseModel):
    """One Google calendar to sync."""

    model_config = ConfigDict(extra="forbid")

    id: CalendarId = Field(description="The calendar's id in events, runs and the API (letters, digits, `_.@-`).")
    calendar_id: str = Field(
        "primary",
        min_length=1,
        max_length=1024,
        description="Google's calendar id (`primary`, an e-mail address or `…@group.calendar.google.com`).",
    )
    name: str | None = Field(None, max_length=200, description="A display name (default: the id).")
    interval_seconds: float = Field(300, ge=0, description="How often to sync; 0 = only on demand.")
    horizon_days: int = Field(365, ge=1, le=3650, description="The first (full) listing reaches this many days ahead.")
    past_days: int = Field(30, ge=0, le=3650, description="…and this many days back.")
    read_only: bool = Field(
        True, description="False lets consumed ACTION:/NOTIZ:/URL: entries be deleted in the Google calendar."
    )
    credentials: GoogleCredentials | None = Field(
        None, description="Credentials for this calendar only (default: the section's `credentials`)."
    )


class GoogleSettings(BaseModel):
    """Section ``google:`` in config/chronos.yaml."""

    model_config = ConfigDict(extra="forbid")

    credentials: GoogleCredentials = Field(
        default_factory=GoogleCredentials, description="Credentials of every calendar without its own."
    )
    calendars: list[GoogleCalendarConfig] = Field(default_factory=list, description="The calendars to sync.")
    api_base_url: str | None = Field(
        None,
        description="Send API requests here instead of https://www.googleapis.com (tests and proxies);"
        " subject to the outbound network policy.",
    )
    timeout_seconds: float = Field(30, gt=0, le=600, description="Time allowed for one HTTP request.")
    page_size: int = Field(2500, ge=1, le=2500, description="Events per page (maxResults; Google allows 2500).")
    max_retries: int = Field(
        5, ge=0, le=20, description="Retries of a request answered with a rate limit (403, 429) or a 5xx."
    )
    backoff_base_seconds: float = Field(
        1.0, ge=0, le=60, description="First retry delay; doubled per retry, with random jitter."
    )
    backoff_max_seconds: float = Field(
        60, ge=0, le=3600, description="The longest wait before a retry; a longer Retry-After ends the run."
    )

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("give an http:// or https:// URL, e.g. http://127.0.0.1:8089")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("the URL takes no user info, query or fragment")
        return value.rstrip("/")

    @field_validator("calendars")
    @classmethod
    def _unique(cls, value: list[GoogleCalendarConfig]) -> list[GoogleCalendarConfig]:
        seen: set[str] = set()
        for cal in value:
            if cal.id in seen:
                raise ValueError(f"calendar id {cal.id!r} appears twice")
            seen.add(cal.id)
        return value

    @model_validator(mode="after")
    def _credentials_for_all(self) -> GoogleSettings:
        for cal in self.calendars:
            if not (cal.credentials or self.credentials).configured:
                raise ValueError(
                    f"calendar {cal.id!r} has no credentials: set google.credentials (service_account_file,"
                    " or client_secrets_file + token_file) or the calendar's own `credentials`"
                )
        return self

    def credentials_of(self, cal: GoogleCalendarConfig) -> GoogleCredentials:
        return cal.credentials or self.credentials
