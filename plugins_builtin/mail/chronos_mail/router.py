"""HTTP routes under ``/api/v1/mail``."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from chronos.plugin import (
    AttachmentsTooLarge,
    InvalidMail,
    MailAttachment,
    MailQueue,
    OutgoingMail,
    PluginContext,
    Principal,
    Problem,
    TemplateNotFound,
    TemplateRenderer,
    decode_cursor,
    encode_cursor,
    request_fingerprint,
    require_scope,
    origin_of,
)

from chronos_mail.models import MailDelivery
from chronos_mail.settings import MailSettings

router = APIRouter(prefix="/mail", tags=["mail"])
SEND = Depends(require_scope("mail.send"))
Status = Literal["queued", "sent", "retrying", "failed"]
Address = Annotated[str, StringConstraints(min_length=1, max_length=320)]


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field("application/octet-stream", min_length=3, max_length=200)
    content: str = Field(description="The file, base64-encoded (line breaks allowed).")


class SendIn(BaseModel):
    """A message: ``template_id`` with ``variables``, or ``subject`` with ``html`` and/or ``text``."""

    model_config = ConfigDict(extra="forbid")
    to: list[Address] = Field(min_length=1, max_length=1000)
    cc: list[Address] = Field(default_factory=list, max_length=1000)
    bcc: list[Address] = Field(default_factory=list, max_length=1000)
    template_id: int | None = Field(None, ge=1, le=2**63 - 1)
    variables: dict[str, Any] = Field(default_factory=dict)
    subject: str | None = Field(None, max_length=2000)
    html: str | None = None
    text: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _one_source(self) -> SendIn:
        if self.template_id is not None:
            if self.subject is not None or self.html is not None or self.text is not None:
                raise ValueError("give template_id or subject/html/text, not both")
        else:
            if not self.subject:
                raise ValueError("subject is required without template_id")
            if not (self.html or self.text):
                raise ValueError("give html, text or both (or a template_id)")
        return self


class AttachmentOut(BaseModel):
    filename: str
    content_type: str
    size: int


class DeliveryOut(BaseModel):
    id: int
    message_id: str
    status: Status
    from_: str = Field(alias="from")
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    template_id: int | None
    template_name: str | None
    attempts: int
    last_smtp_code: int | None
    last_smtp_text: str | None
    refused_recipients: dict[str, str] | None
    attachments: list[AttachmentOut]
    created_at: datetime
    updated_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None

    model_config = ConfigDict(populate_by_name=True)


class DeliveryDetail(DeliveryOut):
    text: str
    html: str | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


def _ctx(request: Request) -> PluginContext:
    return request.app.state.chronos


def _view(row: MailDelivery, *, detail: bool = False) -> dict[str, Any]:
    out = {
        "id": row.id, "message_id": row.message_id, "status": row.status, "from": row.from_addr,
        "to": row.to_addrs, "cc": row.cc_addrs or [], "bcc": row.bcc_addrs or [], "subject": row.subject,
        "template_id": row.template_id, "template_name": row.template_name, "attempts": row.attempts,
        "last_smtp_code": row.last_smtp_code, "last_smtp_text": row.last_smtp_text,
        "refused_recipients": row.refused_recipients,
        "attachments": [{"filename": a.filename, "content_type": a.content_type, "size": a.size} for a in row.attachments],
        "created_at": row.created_at, "updated_at": row.updated_at, "last_attempt_at": row.last_attempt_at,
        "next_attempt_at": row.next_attempt_at if row.status in ("queued", "retrying") else None,
        "sent_at": row.sent_at,
    }
    model = DeliveryDetail if detail else DeliveryOut
    if detail:
        out.update(text=row.text, html=row.html)
    return model.model_validate(out).model_dump(mode="json", by_alias=True)


def _decode_attachments(items: list[AttachmentIn], settings: MailSettings) -> list[MailAttachment]:
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


@router.post("/send", status_code=202, response_model=DeliveryOut, response_model_by_alias=True,
             responses={409: {"description": "Idempotency-Key reused with another body"},
                        413: {"description": "Attachments over the size limit"},
                        503: {"description": "Mail not configured, or templates plugin not enabled"}})
async def send_mail(
    body: SendIn,
    request: Request,
    principal: Principal = SEND,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
               description="A retry with the same key and body returns the first delivery; never sends twice."),
    ] = None,
) -> JSONResponse:
    """Queue a message; a background job sends it. Answers 202 with the delivery."""
    ctx = _ctx(request)
    settings: MailSettings = ctx.section(MailSettings)
    queue = ctx.service(MailQueue)
    fingerprint = request_fingerprint(body.model_dump(mode="json"))
    if idempotency_key:
        prior = await queue.replay(idempotency_key, fingerprint, principal=principal)
        if prior is not None:
            return await _answer(ctx, prior.id, replayed=True)
    attachments = _decode_attachments(body.attachments, settings)
    template_id = template_name = None
    if body.template_id is not None:
        if not ctx.has_service(TemplateRenderer):
            raise Problem(503, "Sending a template needs the templates plugin, which is not enabled",
                          type="plugin-not-enabled", plugin="templates")
        try:
            rendered = await ctx.service(TemplateRenderer).render_email(body.template_id, body.variables)
        except TemplateNotFound:
            raise Problem(422, f"No template with id {body.template_id}", type="validation",
                          errors=[{"pointer": "/template_id", "detail": "no such template"}]) from None
        subject, html, text = rendered.subject, rendered.html, rendered.text
        template_id, template_name = rendered.template_id, rendered.template_name
    else:
        subject, html, text = body.subject or "", body.html, body.text
    queued = await queue.enqueue(
        OutgoingMail(to=body.to, cc=body.cc, bcc=body.bcc, subject=subject, html=html, text=text,
                     attachments=attachments, template_id=template_id, template_name=template_name),
        idempotency_key=idempotency_key, fingerprint=fingerprint, principal=principal, origin=origin_of(request),
    )
    return await _answer(ctx, queued.id, replayed=queued.replayed)


async def _answer(ctx: PluginContext, delivery_id: int, *, replayed: bool) -> JSONResponse:
    async with ctx.db.read() as s:
        row = await _load(s, delivery_id)
    headers = {"Location": f"/api/v1/mail/deliveries/{delivery_id}"}
    if replayed:
        headers["Idempotency-Replayed"] = "true"
    return JSONResponse(_view(row), status_code=202, headers=headers)


async def _load(s: Any, delivery_id: int) -> MailDelivery:
    row = (
        await s.execute(
            select(MailDelivery).options(selectinload(MailDelivery.attachments)).where(MailDelivery.id == delivery_id)
        )
    ).scalar()
    if row is None:
        raise Problem(404, f"No delivery with id {delivery_id}", type="not-found")
    return row


@router.get("/deliveries", response_model=DeliveryPage, response_model_by_alias=True)
async def list_deliveries(
    request: Request,
    _: Principal = SEND,
    status: Annotated[Status | None, Query(description="Only deliveries in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """The delivery log, newest first."""
    q = select(MailDelivery).options(selectinload(MailDelivery.attachments))
    if status is not None:
        q = q.where(MailDelivery.status == status)
    if cursor:
        (last_id,) = decode_cursor("mail.deliveries", cursor, [int])
        q = q.where(MailDelivery.id < last_id)
    q = q.order_by(MailDelivery.id.desc()).limit(limit + 1)
    async with _ctx(request).db.read() as s:
        rows = (await s.execute(q)).scalars().all()
    items = rows[:limit]
    nxt = encode_cursor("mail.deliveries", [items[-1].id]) if len(rows) > limit else None
    return {"items": [_view(r) for r in items], "next_cursor": nxt}


@router.get("/deliveries/{delivery_id:int}", response_model=DeliveryDetail, response_model_by_alias=True,
            responses={404: {"description": "No delivery with this id"}})
async def get_delivery(
    delivery_id: Annotated[int, Path(ge=1, le=2**63 - 1)], request: Request, _: Principal = SEND
) -> dict[str, Any]:
    """One delivery with its text and HTML parts."""
    async with _ctx(request).db.read() as s:
        return _view(await _load(s, delivery_id), detail=True)
