"""Shared helpers for the planning plugin's tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

PLUGINS = ["events", "planning"]
LOCAL = ["work", "home", "holidays", "gym"]


def config(**planning: Any) -> dict[str, Any]:
    return {"events": {"local_calendars": LOCAL}, "planning": planning}


def z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def create(c: Any, title: str, start: Any, end: Any, *, calendar: str = "work", **fields: Any) -> int:
    body = {"title": title, "calendar_id": calendar, "start": _iso(start), "end": _iso(end), **fields}
    r = await c.post("/api/v1/events", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


async def pairs(c: Any, start: datetime, end: datetime, **params: Any) -> list[tuple[int, int, str]]:
    r = await c.get("/api/v1/conflicts", params={"from": z(start), "to": z(end), **params})
    assert r.status_code == 200, r.text
    return [(*item["event_ids"], item["reason"]) for item in r.json()["items"]]
