"""HTTP routes under ``/api/v1/mail``: parse, authorise, call one use case, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from chronos.plugin import Context, Principal, origin_of, require_scope

from chronos_mail import deliveries
from chronos_mail.schemas import DeliveryDetail, DeliveryOut, DeliveryPage, SendIn, Status

router = APIRouter(prefix="/mail", tags=["mail"])
SEND = Depends(require_scope("mail.send"))


@router.post(
    "/send",
    status_code=202,
    response_model=DeliveryOut,
    response_model_by_alias=True,
    responses={
        409: {"description": "Idempotency-Key reused with another body"},
        413: {"description": "Attachments over the size limit (`mail.max_attachment_bytes`, decoded)"},
        422: {
            "description": "A field breaks its pattern or limit; To, Cc and Bcc together exceed "
            "`mail.max_recipients`; html or text exceeds `mail.max_body_chars`; `template_id` names no "
            "stored email template, or the variables do not satisfy its `variables_json`"
        },
        503: {"description": "Mail not configured, or templates plugin not enabled"},
    },
)
async def send_mail(
    body: SendIn,
    ctx: Context,
    request: Request,
    principal: Principal = SEND,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            pattern=r"^[\x21-\x7e]+$",
            description="A retry with the same key and body returns the first delivery; never sends twice.",
        ),
    ] = None,
) -> JSONResponse:
    """Queue a message; a background job sends it. Answers 202 with the delivery."""
    queued = await deliveries.send(
        ctx, body, principal=principal, idempotency_key=idempotency_key, origin=origin_of(request)
    )
    headers = {"Location": f"/api/v1/mail/deliveries/{queued.delivery['id']}"}
    if queued.replayed:
        headers["Idempotency-Replayed"] = "true"
    return JSONResponse(queued.delivery, status_code=202, headers=headers)


@router.get("/deliveries", response_model=DeliveryPage, response_model_by_alias=True)
async def list_deliveries(
    ctx: Context,
    _: Principal = SEND,
    status: Annotated[Status | None, Query(description="Only deliveries in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """The delivery log, newest first."""
    return await deliveries.list_deliveries(ctx, status=status, limit=limit, cursor=cursor)


@router.get(
    "/deliveries/{delivery_id:int}",
    response_model=DeliveryDetail,
    response_model_by_alias=True,
    responses={404: {"description": "No delivery with this id"}},
)
async def get_delivery(
    delivery_id: Annotated[int, Path(ge=1, le=2**63 - 1)], ctx: Context, _: Principal = SEND
) -> dict[str, Any]:
    """One delivery with its text and HTML parts."""
    return await deliveries.get_delivery(ctx, delivery_id)
