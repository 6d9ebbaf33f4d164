"""The ``mail.failed`` outbox event: a delivery that will not be sent."""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import EventType, Outbox, PluginContext


class MailFailed(BaseModel):
    """``mail.failed``: a queued message failed for good (a permanent refusal or the last retry)."""

    delivery_id: int
    message_id: str
    attempts: int
    smtp_code: int | None = None
    error: str = Field(description="The server's last reply or the transport error.")


EVENT_TYPES = [EventType("mail.failed", MailFailed, "A queued message failed for good")]


async def publish_failed(
    ctx: PluginContext, s: AsyncSession, delivery_id: int, message_id: str, attempts: int, code: int | None, text: str
) -> None:
    if ctx.has_service(Outbox):
        payload = {
            "delivery_id": delivery_id,
            "message_id": message_id,
            "attempts": attempts,
            "smtp_code": code,
            "error": text[:1000],
        }
        await ctx.service(Outbox).enqueue(s, "mail.failed", payload)
