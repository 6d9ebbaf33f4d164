"""The ``caldav:`` settings section."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

CalendarId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class CaldavCalendar(BaseModel):
    """One CalDAV calendar collection."""

    model_config = ConfigDict(extra="forbid")

    id: CalendarId = Field(description="The calendar's id in events, runs and the API (letters, digits, `_.@-`).")
    url: str = Field(
        description="The calendar collection's URL, e.g. https://cloud.example.org/remote.php/dav/calendars/ann/work/"
        " (Nextcloud) or https://dav.example.org/ann/work/ (Radicale). No user name or password in it."
    )
    username: str | None = Field(None, max_length=255, description="Login name; no login when empty.")
    password_env: EnvName | None = Field(
        None, description="The environment variable holding the password (read at each sync, never logged)."
    )
    password_file: Path | None = Field(
        None, description="A file holding the password (e.g. a container secret); read at each sync."
    )
    auth: Literal["auto", "basic", "digest"] = Field(
        "auto", description="HTTP authentication: what the server asks for (auto), or always basic or digest."
    )
    interval_seconds: float = Field(900, ge=0, description="How often to sync; 0 = only on demand.")
    horizon_days: int = Field(365, ge=1, le=3650, description="Expand recurring events this many days ahead.")
    past_days: int = Field(90, ge=0, le=3650, description="…and this many days back.")
    read_only: bool = Field(
        True,
        description="false lets consumed entries (e.g. an ACTION: that became a command) be deleted at the server.",
    )
    default_timezone: str | None = Field(None, description="Zone of floating times (default: the normalize plugin's).")

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("give the calendar as an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the URL carries a user name or password: use username and password_env or password_file")
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

    @model_validator(mode="after")
    def _one_password(self) -> CaldavCalendar:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError(f"calendar {self.id!r}: give at most one of password_env and password_file")
        if (self.password_env is not None or self.password_file is not None) and not self.username:
            raise ValueError(f"calendar {self.id!r}: a password needs a username")
        return self

    def password(self) -> str | None:
        """The password, read now (so a rotated secret is used at the next sync).

        Raises ``LookupError`` with a message naming the variable or file, never the value.
        """
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise LookupError(f"the environment variable {self.password_env} (password_env) is not set")
            return value
        if self.password_file is not None:
            try:
                return self.password_file.expanduser().read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise LookupError(
                    f"cannot read the password file {self.password_file}: {exc.strerror or type(exc).__name__}"
                ) from None
        return None


class CaldavSettings(BaseModel):
    """Section ``caldav:`` in config/chronos.yaml."""

    model_config = ConfigDict(extra="forbid")

    calendars: list[CaldavCalendar] = Field(default_factory=list, description="The calendars to sync.")
    timeout_seconds: float = Field(
        60, gt=0, le=600, description="Time allowed for one request (connecting and each read)."
    )
    verify_tls: bool = Field(True, description="Verify the servers' TLS certificates.")
    batch_size: int = Field(500, ge=1, le=10_000, description="Events per pipeline batch (one transaction each).")
    max_instances_per_event: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="A recurring event expanding to more instances inside the window is reported as an error.",
    )

    @field_validator("calendars")
    @classmethod
    def _unique(cls, value: list[CaldavCalendar]) -> list[CaldavCalendar]:
        seen: set[str] = set()
        for cal in value:
            if cal.id in seen:
                raise ValueError(f"calendar id {cal.id!r} appears twice")
            seen.add(cal.id)
        return value
