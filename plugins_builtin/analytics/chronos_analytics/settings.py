"""Section ``analytics:`` in config/chronos.yaml."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator


def known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class FollowUps(BaseModel):
    """Rule-based labels added to events as they are synced or created (no AI: thresholds)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Label events on heavy days and in long back-to-back chains.")
    heavy_day_hours: float = Field(8.0, gt=0, le=24, description="A day with more busy hours than this is heavy.")
    heavy_day_tag: str = Field("heavy-day", min_length=1, max_length=200, description="Tag of events on a heavy day.")
    chain_minutes: int = Field(
        180, ge=1, le=10_080, description="A back-to-back chain lasting longer than this is long."
    )
    chain_tag: str = Field(
        "back-to-back", min_length=1, max_length=200, description="Tag of events in a long back-to-back chain."
    )


class AnalyticsSettings(BaseModel):
    """Time allocation, summaries and follow-up labels."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = Field("UTC", max_length=64, description="Default time zone of day, week and hour buckets.")
    max_window_days: int = Field(400, ge=1, le=3660, description="The longest window an analytics request may cover.")
    back_to_back_gap_minutes: int = Field(
        0, ge=0, le=120, description="Events this close (or overlapping) form a back-to-back chain."
    )
    followups: FollowUps = Field(default_factory=FollowUps, description="Rule-based labels (tags) on events.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not known_zone(value):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)")
        return value
