"""The use cases behind the routes and the CLI: endpoints, deliveries, dead letters, replay, health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    Conflict,
    HealthResult,
    InvalidInput,
    NotFound,
    OutboundRefused,
    PluginContext,
    Principal,
    check_outbound,
    decode_cursor,
    encode_cursor,
    record_audit,
    type_matches,
    utcnow,
    webhook_signing,
)

from chronos_webhooks.models import AttemptRow, DeliveryRow, EndpointRow, OutboxRow
from chronos_webhooks.outbox import kick_dispatcher, new_webhook_id
from chronos_webhooks.schemas import WebhookIn, WebhookPatch
from chronos_webhooks.settings import WebhooksSettings
from chronos_webhooks.sink import ENDPOINT_FILTERS


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def endpoint_view(row: EndpointRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "event_types": list(row.event_types),
        "calendars": list(row.calendars) if row.calendars is not None else None,
        "template_id": row.template_id,
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "secrets": [
            {"prefix": e["secret"][:12], "created_at": e["created_at"], "expires_at": e.get("expires_at")}
            for e in sorted(row.secrets, key=lambda e: e["created_at"], reverse=True)
        ],
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


async def check_url(ctx: PluginContext, url: str, pointer: str = "/url") -> None:
    """422 unless the outbound guard lets requests go to ``url`` (scheme, resolved addresses)."""
    try:
        await check_outbound(ctx, url)
    except OutboundRefused as exc:
        reason = str(exc)[:300]
        raise InvalidInput(
            f"The webhook URL is not allowed: {reason}",
            type="webhook-url-refused",
            errors=[{"pointer": pointer, "detail": reason}],
        ) from None
    except httpx.RequestError as exc:  # the name does not resolve
        reason = str(exc)[:300] or type(exc).__name__
        raise InvalidInput(
            f"The webhook URL cannot be reached: {reason}",
            type="webhook-url-unreachable",
            errors=[{"pointer": pointer, "detail": reason}],
        ) from None


def check_filters(ctx: PluginContext, filters: list[str]) -> None:
    """422 for a filter that matches no declared event type (a typo would silently receive nothing)."""
    known = sorted(ctx.event_types)
    errors = [
        {"pointer": f"/event_types/{i}", "detail": f"{f!r} matches no event type"}
        for i, f in enumerate(filters)
        if not any(type_matches(f, t) for t in known)
    ]
    if errors:
        raise InvalidInput(
            f"{errors[0]['detail']}; the event types are: {', '.join(known)}", type="webhook-event-types", errors=errors
        )


async def check_template(ctx: PluginContext, template_id: int | None) -> None:
    if template_id is None:
        return
    from chronos.plugin import TemplateRenderer

    if not ctx.has_service(TemplateRenderer):
        raise InvalidInput(
            "template_id needs the templates plugin, which is not enabled",
            type="webhook-template",
            errors=[{"pointer": "/template_id", "detail": "the templates plugin is not enabled"}],
        )


async def _load(s: AsyncSession, endpoint_id: int) -> EndpointRow:
    row = await s.get(EndpointRow, endpoint_id)
    if row is None:
        raise NotFound(f"No webhook endpoint with id {endpoint_id}", type="webhook-not-found")
    return row


async def create_endpoint(ctx: PluginContext, body: WebhookIn, principal: Principal | None) -> dict[str, Any]:
    check_filters(ctx, body.event_types)
    await check_url(ctx, body.url)
    await check_template(ctx, body.template_id)
    now = utcnow()
    secret = body.secret or webhook_signing.new_secret()
    async with ctx.db.write() as s:
        row = EndpointRow(
            url=body.url,
            description=body.description,
            event_types=list(dict.fromkeys(body.event_types)),
            calendars=body.calendars,
            template_id=body.template_id,
            enabled=body.enabled,
            secrets=[{"secret": secret, "created_at": _iso(now), "expires_at": None}],
            created_by=principal.key_id if principal else None,
            created_at=now,
            updated_at=now,
        )
        s.add(row)
        await s.flush()
        ctx.resource(ENDPOINT_FILTERS).changed()
        await record_audit(
            s,
            entity="webhook_endpoint",
            entity_id=row.id,
            action="create",
            change={"url": body.url, "event_types": row.event_types, "enabled": body.enabled},
            principal=principal,
        )
        return {**endpoint_view(row), "secret": secret}


async def update_endpoint(
    ctx: PluginContext, endpoint_id: int, body: WebhookPatch, principal: Principal | None
) -> dict[str, Any]:
    fields = body.model_fields_set
    if body.event_types is not None:
        check_filters(ctx, body.event_types)
    if "url" in fields and body.url is not None:
        await check_url(ctx, body.url)
    if "template_id" in fields:
        await check_template(ctx, body.template_id)
    now = utcnow()
    settings = ctx.section(WebhooksSettings)
    async with ctx.db.write() as s:
        row = await _load(s, endpoint_id)
        change: dict[str, Any] = {}
        for name in ("url", "description", "event_types", "enabled"):
            if name in fields and getattr(body, name) is not None:
                value = getattr(body, name)
                setattr(row, name, list(dict.fromkeys(value)) if name == "event_types" else value)
                change[name] = value
        for name in ("calendars", "template_id"):
            if name in fields:
                setattr(row, name, getattr(body, name))
                change[name] = getattr(body, name)
        if body.enabled:
            row.disabled_reason = None
        elif body.enabled is False:
            row.disabled_reason = "disabled through the API"
        secret = None
        if body.rotate_secret:
            secret = webhook_signing.new_secret()
            expires = _iso(now + timedelta(seconds=settings.secret_overlap_seconds))
            kept = [
                {**e, "expires_at": e.get("expires_at") or expires}
                for e in row.secrets
                if not e.get("expires_at") or datetime.fromisoformat(e["expires_at"].replace("Z", "+00:00")) > now
            ]
            row.secrets = [*kept, {"secret": secret, "created_at": _iso(now), "expires_at": None}]
            change["rotate_secret"] = True
        row.updated_at = now
        await record_audit(
            s, entity="webhook_endpoint", entity_id=row.id, action="update", change=change, principal=principal
        )
        await s.flush()
        ctx.resource(ENDPOINT_FILTERS).changed()
        out = endpoint_view(row)
    if secret is not None:
        out["secret"] = secret
    return out


async def delete_endpoint(ctx: PluginContext, endpoint_id: int, principal: Principal | None) -> None:
    async with ctx.db.write() as s:
        row = await _load(s, endpoint_id)
        await s.execute(delete(AttemptRow).where(AttemptRow.endpoint_id == endpoint_id))
        await s.execute(delete(DeliveryRow).where(DeliveryRow.endpoint_id == endpoint_id))
        await s.delete(row)
        await s.flush()
        ctx.resource(ENDPOINT_FILTERS).changed()
        await record_audit(
            s,
            entity="webhook_endpoint",
            entity_id=endpoint_id,
            action="delete",
            change={"url": row.url},
            principal=principal,
        )


async def get_endpoint(ctx: PluginContext, endpoint_id: int) -> dict[str, Any]:
    async with ctx.db.read() as s:
        return endpoint_view(await _load(s, endpoint_id))


async def list_endpoints(ctx: PluginContext, *, limit: int, cursor: str | None) -> dict[str, Any]:
    q = select(EndpointRow).order_by(EndpointRow.id).limit(limit + 1)
    if cursor:
        (last,) = decode_cursor("webhooks.endpoints", cursor, [int])
        q = q.where(EndpointRow.id > last)
    async with ctx.db.read() as s:
        rows = list((await s.execute(q)).scalars())
    items = rows[:limit]
    nxt = encode_cursor("webhooks.endpoints", [items[-1].id]) if len(rows) > limit else None
    return {"items": [endpoint_view(r) for r in items], "next_cursor": nxt}


async def list_attempts(ctx: PluginContext, endpoint_id: int, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """Every attempt to one endpoint, newest first."""
    q = (
        select(AttemptRow, OutboxRow.webhook_id, OutboxRow.event_type)
        .join(DeliveryRow, DeliveryRow.id == AttemptRow.delivery_id)
        .join(OutboxRow, OutboxRow.id == DeliveryRow.message_id)
        .where(AttemptRow.endpoint_id == endpoint_id)
        .order_by(AttemptRow.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        (last,) = decode_cursor("webhooks.attempts", cursor, [int])
        q = q.where(AttemptRow.id < last)
    async with ctx.db.read() as s:
        await _load(s, endpoint_id)
        rows = (await s.execute(q)).all()
    items = rows[:limit]
    nxt = encode_cursor("webhooks.attempts", [items[-1][0].id]) if len(rows) > limit else None
    return {
        "items": [
            {
                "id": a.id,
                "delivery_id": a.delivery_id,
                "webhook_id": webhook_id,
                "event_type": event_type,
                "attempt": a.attempt,
                "attempted_at": a.attempted_at,
                "outcome": a.outcome,
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error,
                "response_excerpt": a.response_excerpt,
            }
            for a, webhook_id, event_type in items
        ],
        "next_cursor": nxt,
    }


def delivery_view(d: DeliveryRow, m: OutboxRow) -> dict[str, Any]:
    return {
        "id": d.id,
        "message_id": m.id,
        "webhook_id": m.webhook_id,
        "event_type": m.event_type,
        "target": d.target,
        "endpoint_id": d.endpoint_id,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "delivered_at": d.delivered_at,
        "dead_at": d.dead_at,
    }


async def list_deliveries(
    ctx: PluginContext,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
    older_than: datetime | None = None,
) -> dict[str, Any]:
    """Deliveries (all, or in one status), newest first."""
    q = (
        select(DeliveryRow, OutboxRow)
        .join(OutboxRow, OutboxRow.id == DeliveryRow.message_id)
        .order_by(DeliveryRow.id.desc())
        .limit(limit + 1)
    )
    if status is not None:
        q = q.where(DeliveryRow.status == status)
    if older_than is not None:
        q = q.where(DeliveryRow.dead_at < older_than)
    if cursor:
        (last,) = decode_cursor("webhooks.deliveries", cursor, [int])
        q = q.where(DeliveryRow.id < last)
    async with ctx.db.read() as s:
        rows = (await s.execute(q)).all()
    items = rows[:limit]
    nxt = encode_cursor("webhooks.deliveries", [items[-1][0].id]) if len(rows) > limit else None
    return {"items": [delivery_view(d, m) for d, m in items], "next_cursor": nxt}


async def replay_dead(ctx: PluginContext, delivery_id: int, principal: Principal | None) -> dict[str, Any]:
    """Send a dead letter again: the same message and webhook id, a fresh retry schedule."""
    now = utcnow()
    async with ctx.db.write() as s:
        row = (
            await s.execute(
                select(DeliveryRow, OutboxRow)
                .join(OutboxRow, OutboxRow.id == DeliveryRow.message_id)
                .where(DeliveryRow.id == delivery_id)
            )
        ).first()
        if row is None or row[0].status != "dead":
            raise NotFound(f"No dead letter with id {delivery_id}", type="dead-letter-not-found")
        d, m = row
        d.status, d.attempts, d.next_attempt_at, d.dead_at = "pending", 0, now, None
        d.locked_by, d.locked_until, d.updated_at = None, None, now
        await record_audit(
            s,
            entity="outbox_delivery",
            entity_id=d.id,
            action="replay",
            change={"webhook_id": m.webhook_id},
            principal=principal,
        )
        await s.flush()
        out = delivery_view(d, m)
    kick_dispatcher(ctx)
    return out


async def replay_all_dead(ctx: PluginContext, *, endpoint_id: int | None = None) -> int:
    now = utcnow()
    q = update(DeliveryRow).where(DeliveryRow.status == "dead")
    if endpoint_id is not None:
        q = q.where(DeliveryRow.endpoint_id == endpoint_id)
    async with ctx.db.write() as s:
        result = await s.execute(
            q.values(
                status="pending", attempts=0, next_attempt_at=now, dead_at=None, locked_by=None, updated_at=now
            ).execution_options(synchronize_session=False)
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge_dead(ctx: PluginContext, older_than: timedelta) -> int:
    """Delete dead letters older than ``older_than``, and messages left without any delivery."""
    cutoff = utcnow() - older_than
    async with ctx.db.write() as s:
        result = await s.execute(delete(DeliveryRow).where(DeliveryRow.status == "dead", DeliveryRow.dead_at < cutoff))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge_delivered(ctx: PluginContext, older_than: timedelta) -> dict[str, int]:
    """Delete delivered deliveries older than ``older_than`` and messages without any delivery left."""
    cutoff = utcnow() - older_than
    async with ctx.db.write() as s:
        deliveries = await s.execute(
            delete(DeliveryRow).where(DeliveryRow.status == "delivered", DeliveryRow.delivered_at < cutoff)
        )
        orphans = await s.execute(
            delete(OutboxRow).where(
                OutboxRow.fanned_out.is_(True),
                OutboxRow.created_at < cutoff,
                ~select(DeliveryRow.id).where(DeliveryRow.message_id == OutboxRow.id).exists(),
            )
        )
    return {"deliveries": int(deliveries.rowcount or 0), "messages": int(orphans.rowcount or 0)}  # type: ignore[attr-defined]


async def send_test(ctx: PluginContext, endpoint_id: int, principal: Principal | None) -> dict[str, Any]:
    """Publish an ``outbox.test`` message for this endpoint only (through the outbox, with its retries)."""
    async with ctx.db.write() as s:
        row = await _load(s, endpoint_id)
        if not row.enabled:
            raise Conflict(
                f"Webhook endpoint {endpoint_id} is disabled ({row.disabled_reason or 'by request'}); enable it first",
                type="webhook-disabled",
            )
        message = OutboxRow(
            webhook_id=new_webhook_id(),
            event_type="outbox.test",
            payload={"endpoint_id": row.id, "note": "A test message from Chronos"},
            endpoint_id=row.id,
            fanned_out=False,
            created_at=utcnow(),
        )
        s.add(message)
        await s.flush()
        await record_audit(
            s,
            entity="webhook_endpoint",
            entity_id=row.id,
            action="test",
            change={"webhook_id": message.webhook_id},
            principal=principal,
        )
        out = {"message_id": message.id, "webhook_id": message.webhook_id, "event_type": "outbox.test"}
    kick_dispatcher(ctx)
    return out


async def outbox_health(ctx: PluginContext) -> HealthResult:
    """Backlog (messages not fanned out plus pending deliveries), the oldest pending age, dead letters."""
    now = utcnow()
    async with ctx.db.read() as s:
        unfanned, oldest_message = (
            await s.execute(select(func.count(), func.min(OutboxRow.created_at)).where(OutboxRow.fanned_out.is_(False)))
        ).one()
        counts = dict(
            (
                await s.execute(
                    select(DeliveryRow.status, func.count())
                    .where(DeliveryRow.status.in_(("pending", "dead")))
                    .group_by(DeliveryRow.status)
                )
            ).all()
        )
        oldest_delivery = (
            await s.execute(select(func.min(DeliveryRow.created_at)).where(DeliveryRow.status == "pending"))
        ).scalar()
    oldest = min((t for t in (oldest_message, oldest_delivery) if t is not None), default=None)
    detail: dict[str, Any] = {
        "backlog": int(unfanned or 0) + int(counts.get("pending", 0)),
        "dead": int(counts.get("dead", 0)),
        "oldest_pending_seconds": None,
    }
    if oldest is not None:
        if oldest.tzinfo is None:  # SQLite's MIN() bypasses the column type
            oldest = oldest.replace(tzinfo=UTC)
        detail["oldest_pending_seconds"] = round(max(0.0, (now - oldest).total_seconds()), 1)
    if oldest_message is not None:
        if oldest_message.tzinfo is None:
            oldest_message = oldest_message.replace(tzinfo=UTC)
        if (now - oldest_message).total_seconds() > 600:
            # Messages waiting ten minutes for fan-out: no dispatcher is running.
            return HealthResult("degraded", {**detail, "detail": "published messages are not being dispatched"})
    return HealthResult("ok", detail)
