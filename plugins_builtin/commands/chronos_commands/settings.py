"""The ``commands:`` configuration section."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from chronos_commands.whitelist import normalize_origins, normalize_params_spec

SystemId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
CommandName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
Schedule = Literal["now", "event_start"]
#: The longest grace a whitelist entry may give (a year).
GRACE_MAX = 366 * 86_400


class WhitelistSeed(BaseModel):
    """One whitelist entry declared in configuration (applied at every start)."""

    model_config = ConfigDict(extra="forbid")

    system: SystemId = Field(description="Target system id, e.g. 'homeserver'.")
    action: CommandName = Field(description="Command name; stored upper-cased.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Allowed params: name -> null (any value), a regex string, a list (enum), {regex: ...} or {enum: [...]}.",
    )
    enabled: bool = True
    schedule: Schedule = Field(
        "now", description="not_before of calendar ACTIONs: 'now' (when synced) or 'event_start'."
    )
    max_attempts: int | None = Field(None, ge=1, le=100, description="Overrides commands.default_max_attempts.")
    grace_seconds: int | None = Field(
        None,
        ge=0,
        le=GRACE_MAX,
        description="How late after its not_before a command may still be handed out (e.g. after downtime); "
        "later ones become 'missed' with a reason and an audit entry. null: no limit.",
    )
    description: str = Field("", max_length=500)
    sources: list[str] | None = Field(
        None, description="Calendar sources (ics, local …) whose ACTION: entries may create these commands; null: any."
    )
    calendars: list[str] | None = Field(
        None, description="Calendar ids whose ACTION: entries may create these commands; null: any."
    )

    @field_validator("params")
    @classmethod
    def _params(cls, value: Any) -> dict[str, Any]:
        return normalize_params_spec(value)

    @field_validator("sources", "calendars")
    @classmethod
    def _origins(cls, value: Any, info: ValidationInfo) -> list[str] | None:
        return normalize_origins(value, str(info.field_name))


class CalendarSettings(BaseModel):
    """How calendar entries become notes, links and commands."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Parse NOTIZ:/NOTE:/URL:/ACTION: titles of synced events.")
    delete_at_source: bool = Field(
        True, description="Delete consumed entries at sources that can write; read-only sources get a local tombstone."
    )
    upkeep_interval_seconds: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="How often kept entries of handed-out commands are consumed and source deletions retried.",
    )


class CommandsSettings(BaseModel):
    """Section ``commands:`` in config/chronos.yaml."""

    model_config = ConfigDict(extra="forbid")

    default_max_attempts: int = Field(5, ge=1, le=100, description="Leases a command gets before it is dead.")
    default_lease_seconds: int = Field(60, ge=1, le=86_400, description="Lease length when a poll gives none.")
    max_lease_seconds: int = Field(3600, ge=1, le=86_400, description="Longest lease a poll or heartbeat may ask for.")
    backoff_base_seconds: float = Field(5.0, ge=0, le=86_400, description="Delay after the first failed attempt.")
    backoff_max_seconds: float = Field(3600.0, ge=0, le=7 * 86_400, description="Cap of the exponential backoff.")
    workflow_max_depth: int = Field(5, ge=1, le=50, description="Longest chain of workflow-created commands.")
    recover_interval_seconds: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="How often expired leases are returned to the queue (polls that find fewer than `limit` due commands also recover their system).",
    )
    whitelist: list[WhitelistSeed] = Field(default_factory=list, description="Whitelist entries seeded at startup.")
    calendar: CalendarSettings = Field(
        default_factory=CalendarSettings, description="How calendar entries become notes, links and commands."
    )

    @field_validator("whitelist")
    @classmethod
    def _unique(cls, value: list[WhitelistSeed]) -> list[WhitelistSeed]:
        seen: set[tuple[str, str]] = set()
        for seed in value:
            key = (seed.system, seed.action.upper())
            if key in seen:
                raise ValueError(f"whitelist entry {seed.system}/{seed.action.upper()} is listed twice")
            seen.add(key)
        return value
