"""Mail use cases behind the HTTP routes: queue a message, read the delivery log."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from chronos.plugin import (
    AttachmentsTooLarge,
    InvalidInput,
    InvalidMail,
    MailAttachment,
    MailQueue,
    NotFound,
    Origin,
    OutgoingMail,
    PluginContext,
    Principal,
    TemplateNotFound,
    TemplateRenderer,
    Unavailable,
    decode_cursor,
    encode_cursor,
    request_fingerprint,
)

from chronos_mail.models import MailDelivery
from chronos_mail.schemas import AttachmentIn, DeliveryDetail, DeliveryOut, SendIn
from chronos_mail.settings import MailSettings


@dataclass(frozen=True)
class Queued:
    """A queued delivery's view; ``replayed`` when an earlier request with the same Idempotency-Key queued it."""

    delivery: dict[str, Any]
    replayed: bool


def view(row: MailDelivery, *, detail: bool = False) -> dict[str, Any]:
    """The JSON answer for a delivery row (with its text and HTML parts when ``detail``)."""
    out = {
        "id": row.id,
        "message_id": row.message_id,
        "status": row.status,
        "from": row.from_addr,
        "to": row.to_addrs,
        "cc": row.cc_addrs or [],
        "bcc": row.bcc_addrs or [],
        "subject": row.subject,
        "template_id": row.template_id,
        "template_name": row.template_name,
        "attempts": row.attempts,
        "last_smtp_code": row.last_smtp_code,
        "last_smtp_text": row.last_smtp_text,
        "refused_recipients": row.refused_recipients,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size} for a in row.attachments
        ],
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_attempt_at": row.last_attempt_at,
        "next_attempt_at": row.next_attempt_at if row.status in ("queued", "retrying") else None,
        "sent_at": row.sent_at,
    }
    model = DeliveryDetail if detail else DeliveryOut
    if detail:
        out.update(text=row.text, html=row.html)
    return model.model_validate(out).model_dump(mode="json", by_alias=True)


async def load_delivery(s: AsyncSession, delivery_id: int) -> MailDelivery:
    """The delivery with its attachments; :class:`NotFound` otherwise."""
    row = (
        await s.execute(
            select(MailDelivery).options(selectinload(MailDelivery.attachments)).where(MailDelivery.id == delivery_id)
        )
    ).scalar()
    if row is None:
        raise NotFound(f"No delivery with id {delivery_id}", type="not-found")
    return row


def decode_attachments(items: list[AttachmentIn], settings: MailSettings) -> list[MailAttachment]:
    """Decoded attachments; 413 over the size limit (checked before decoding), 422 on bad base64."""
    cleaned = ["".join(a.content.split()) for a in items]
    estimate = sum(len(c) * 3 // 4 for c in cleaned)
    if estimate > settings.max_attachment_bytes + 3 * len(items):
        raise AttachmentsTooLarge(estimate, settings.max_attachment_bytes)
    out, errors = [], []
    for i, (item, data) in enumerate(zip(items, cleaned, strict=True)):
        try:
            if len(data) % 4:  # b64decode tolerates stray padding; a truncated upload must not pass
                raise ValueError("length is not a multiple of 4")
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            errors.append({"pointer": f"/attachments/{i}/content", "detail": "not valid base64"})
            continue
        out.append(MailAttachment(item.filename, item.content_type.lower(), content))
    if errors:
        raise InvalidMail("An attachment is not valid base64: " + ", ".join(e["pointer"] for e in errors), errors)
    return out


async def _message(ctx: PluginContext, body: SendIn, attachments: list[MailAttachment]) -> OutgoingMail:
    """The message to queue: ``body``'s own parts, or its template rendered with its variables."""
    if body.template_id is None:
        return OutgoingMail(
            to=body.to,
            cc=body.cc,
            bcc=body.bcc,
            subject=body.subject or "",
            html=body.html,
            text=body.text,
            attachments=attachments,
        )
    if not ctx.has_service(TemplateRenderer):
        raise Unavailable(
            "Sending a template needs the templates plugin, which is not enabled",
            type="plugin-not-enabled",
            plugin="templates",
        )
    try:
        rendered = await ctx.service(TemplateRenderer).render_email(body.template_id, body.variables)
    except TemplateNotFound:
        raise InvalidInput(
            f"No template with id {body.template_id}",
            errors=[{"pointer": "/template_id", "detail": "no such template"}],
        ) from None
    return OutgoingMail(
        to=body.to,
        cc=body.cc,
        bcc=body.bcc,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        attachments=attachments,
        template_id=rendered.template_id,
        template_name=rendered.template_name,
    )


async def _queued(ctx: PluginContext, delivery_id: int, *, replayed: bool) -> Queued:
    async with ctx.db.read() as s:
        return Queued(view(await load_delivery(s, delivery_id)), replayed)


async def send(
    ctx: PluginContext, body: SendIn, *, principal: Principal, idempotency_key: str | None, origin: Origin | None
) -> Queued:
    """Queue a message (a retry with the same Idempotency-Key and body answers the first delivery)."""
    queue = ctx.service(MailQueue)
    fingerprint = request_fingerprint(body.model_dump(mode="json"))
    if idempotency_key:
        prior = await queue.replay(idempotency_key, fingerprint, principal=principal)
        if prior is not None:
            return await _queued(ctx, prior.id, replayed=True)
    attachments = decode_attachments(body.attachments, ctx.section(MailSettings))
    queued = await queue.enqueue(
        await _message(ctx, body, attachments),
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        principal=principal,
        origin=origin,
    )
    return await _queued(ctx, queued.id, replayed=queued.replayed)


async def list_deliveries(ctx: PluginContext, *, status: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
    """One page of the delivery log, newest first."""
    q = select(MailDelivery).options(selectinload(MailDelivery.attachments))
    if status is not None:
        q = q.where(MailDelivery.status == status)
    if cursor:
        (last_id,) = decode_cursor("mail.deliveries", cursor, [int])
        q = q.where(MailDelivery.id < last_id)
    q = q.order_by(MailDelivery.id.desc()).limit(limit + 1)
    async with ctx.db.read() as s:
        rows = (await s.execute(q)).scalars().all()
    items = rows[:limit]
    nxt = encode_cursor("mail.deliveries", [items[-1].id]) if len(rows) > limit else None
    return {"items": [view(r) for r in items], "next_cursor": nxt}


async def get_delivery(ctx: PluginContext, delivery_id: int) -> dict[str, Any]:
    """One delivery with its text and HTML parts."""
    async with ctx.db.read() as s:
        return view(await load_delivery(s, delivery_id), detail=True)
