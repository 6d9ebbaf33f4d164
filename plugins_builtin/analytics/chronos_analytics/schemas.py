"""Response bodies of the analytics API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Window(BaseModel):
    from_: str = Field(alias="from")
    to: str


class Bucket(BaseModel):
    key: str | int | None = Field(description="The tag (null: untagged), calendar id, weekday (mon…sun) or local hour.")
    minutes: float = Field(description="Minutes of the events inside the window and the bucket.")
    events: int = Field(description="Events overlapping the bucket.")


class TimeAllocation(BaseModel):
    window: Window
    group_by: str
    timezone: str
    busy_only: bool
    total_minutes: float | None = Field(description="Sum over the buckets (null for tags: an event counts per tag).")
    buckets: list[Bucket]


class WeekHours(BaseModel):
    week_start: str = Field(description="The local Monday.")
    busy_hours: float


class Interval(BaseModel):
    start: str
    end: str


class DayOut(BaseModel):
    date: str
    busy_hours: float
    longest_free_minutes: float
    longest_free: Interval | None


class Chain(BaseModel):
    start: str
    end: str
    events: int
    minutes: float


class BackToBack(BaseModel):
    gap_minutes: int
    chains: int
    longest_minutes: float
    items: list[Chain] = Field(description="The first 100 chains.")


class Checklists(BaseModel):
    items: int
    done: int
    completion_rate: float | None


class FollowUpsOut(BaseModel):
    heavy_day_hours: float
    heavy_days: list[str]
    chain_minutes: int
    long_chains: list[Chain]


class Summary(BaseModel):
    window: Window
    timezone: str
    busy_hours_per_week: list[WeekHours]
    days: list[DayOut]
    back_to_back: BackToBack
    checklists: Checklists
    followups: FollowUpsOut
