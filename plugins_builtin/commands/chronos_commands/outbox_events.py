"""The outbox event types of the command queue, and publishing them in the queue's own transactions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import EventType, Outbox, PluginContext, Publication


class CommandEvent(BaseModel):
    """``command.completed``, ``command.failed``, ``command.dead``, ``command.expired``,
    ``command.missed``: a command's new state."""

    model_config = ConfigDict(extra="allow")

    id: int
    command: str
    target_system: str
    status: str = Field(description="The command's status after the change (expired: back to pending).")
    attempts: int
    max_attempts: int
    error: str | None = None
    result: Any = Field(None, description="The worker's result (command.completed).")
    calendar_id: str | None = None
    event_id: int | None = None
    completed_at: str | None = None


EVENT_TYPES = [
    EventType("command.completed", CommandEvent, "A command was completed (by its worker or by hand)"),
    EventType("command.failed", CommandEvent, "A command failed for good (not retried)"),
    EventType("command.dead", CommandEvent, "A command ran out of attempts"),
    EventType("command.expired", CommandEvent, "A command's lease expired; it returns to the queue"),
    EventType(
        "command.missed",
        CommandEvent,
        "A command was not handed out because it was later than its whitelist entry's grace_seconds",
    ),
]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def payload(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "command": row["command"],
        "target_system": row["target_system"],
        "status": row["status"],
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "error": row.get("error"),
        "result": row.get("result_json") if row["status"] == "completed" else None,
        "calendar_id": row.get("calendar_id"),
        "event_id": row.get("event_id"),
        "completed_at": _iso(row.get("completed_at")),
    }


async def publish(ctx: PluginContext, s: AsyncSession, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Publish ``(event type, command row)`` pairs with ``s`` (nothing when no outbox is enabled)."""
    if not ctx.has_service(Outbox):
        return
    messages = [Publication(kind, payload(row), calendar_id=row.get("calendar_id")) for kind, row in items]
    if messages:
        await ctx.service(Outbox).enqueue_many(s, messages)
