"""HTTP routes under ``/api/v1/webhooks`` and ``/api/v1/outbox``: parse, authorise, call one use case."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from chronos.plugin import Context, Principal, require_scope

from chronos_webhooks import service
from chronos_webhooks.schemas import (
    EventTypeList,
    OutboxDeliveryOut,
    OutboxDeliveryPage,
    OutboxDeliveryStatus,
    WebhookAttemptPage,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPage,
    WebhookPatch,
    WebhookPatched,
    WebhookTestQueued,
)

router = APIRouter(tags=["webhooks"])
MANAGE = Depends(require_scope("webhooks.manage"))
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=2048)]
NOT_FOUND = {404: {"description": "No webhook endpoint with this id"}}
REFUSED = {422: {"description": "Invalid body, or a URL the outbound guard refuses (private address, file://)"}}


@router.post("/webhooks", status_code=201, response_model=WebhookCreated, responses=REFUSED)
async def create_webhook(body: WebhookIn, ctx: Context, response: Response, principal: Principal = MANAGE) -> Any:
    """Add an endpoint. The answer holds its signing secret; no later answer shows it again."""
    out = await service.create_endpoint(ctx, body, principal)
    response.headers["Location"] = f"/api/v1/webhooks/{out['id']}"
    return out


@router.get("/webhooks", response_model=WebhookPage)
async def list_webhooks(ctx: Context, _: Principal = MANAGE, limit: Limit = 50, cursor: Cursor = None) -> Any:
    """Every endpoint, oldest first."""
    return await service.list_endpoints(ctx, limit=limit, cursor=cursor)


@router.get("/webhooks/{endpoint_id}", response_model=WebhookOut, responses=NOT_FOUND)
async def get_webhook(endpoint_id: Id, ctx: Context, _: Principal = MANAGE) -> Any:
    """One endpoint (its secrets by prefix only)."""
    return await service.get_endpoint(ctx, endpoint_id)


@router.patch(
    "/webhooks/{endpoint_id}",
    response_model=WebhookPatched,
    responses={**NOT_FOUND, **REFUSED},
)
async def patch_webhook(endpoint_id: Id, body: WebhookPatch, ctx: Context, principal: Principal = MANAGE) -> Any:
    """Change an endpoint; ``rotate_secret`` adds a secret (answered once in ``secret``), ``enabled`` re-enables."""
    return await service.update_endpoint(ctx, endpoint_id, body, principal)


@router.delete("/webhooks/{endpoint_id}", status_code=204, responses=NOT_FOUND)
async def delete_webhook(endpoint_id: Id, ctx: Context, principal: Principal = MANAGE) -> Response:
    """Remove an endpoint with its deliveries and attempts."""
    await service.delete_endpoint(ctx, endpoint_id, principal)
    return Response(status_code=204)


@router.get("/webhooks/{endpoint_id}/deliveries", response_model=WebhookAttemptPage, responses=NOT_FOUND)
async def webhook_attempts(
    endpoint_id: Id, ctx: Context, _: Principal = MANAGE, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """Every attempt to this endpoint, newest first: time, outcome, status, latency and a response excerpt."""
    return await service.list_attempts(ctx, endpoint_id, limit=limit, cursor=cursor)


@router.post(
    "/webhooks/{endpoint_id}/test",
    status_code=202,
    response_model=WebhookTestQueued,
    responses={**NOT_FOUND, 409: {"description": "The endpoint is disabled"}},
)
async def test_webhook(endpoint_id: Id, ctx: Context, principal: Principal = MANAGE) -> Any:
    """Send an ``outbox.test`` message to this endpoint, through the outbox (with retries)."""
    return await service.send_test(ctx, endpoint_id, principal)


@router.get("/outbox/event-types", response_model=EventTypeList)
async def event_types(ctx: Context, _: Principal = MANAGE) -> Any:
    """Every event type a subscriber can filter on, with the JSON Schema of its data."""
    return {
        "items": [
            {"name": name, "description": t.description, "payload_schema": t.model.model_json_schema()}
            for name, t in sorted(ctx.event_types.items())
        ]
    }


@router.get("/outbox/deliveries", response_model=OutboxDeliveryPage)
async def outbox_deliveries(
    ctx: Context,
    _: Principal = MANAGE,
    status: Annotated[OutboxDeliveryStatus | None, Query(description="Only deliveries in this state.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Deliveries to every subscriber (endpoints and plugin targets), newest first."""
    return await service.list_deliveries(ctx, status=status, limit=limit, cursor=cursor)


@router.get("/outbox/dead", response_model=OutboxDeliveryPage)
async def outbox_dead(ctx: Context, _: Principal = MANAGE, limit: Limit = 50, cursor: Cursor = None) -> Any:
    """The dead letters: deliveries that ran out of retries, were refused for good, or hit a 410."""
    return await service.list_deliveries(ctx, status="dead", limit=limit, cursor=cursor)


@router.post(
    "/outbox/dead/{delivery_id}/replay",
    status_code=202,
    response_model=OutboxDeliveryOut,
    responses={404: {"description": "No dead letter with this id"}},
)
async def replay_dead(delivery_id: Id, ctx: Context, principal: Principal = MANAGE) -> Any:
    """Deliver a dead letter again, with the same ``webhook-id`` (receivers deduplicate) and a fresh schedule."""
    return await service.replay_dead(ctx, delivery_id, principal)
