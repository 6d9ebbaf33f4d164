"""The ``webhooks.dispatch`` job: fan messages out, claim due deliveries, send them, record every attempt.

At-least-once. Fan-out turns each published message into one delivery per
subscriber (enabled endpoints whose filters match, plugin delivery targets
that accept the type) in one transaction with marking the message fanned out.
Claims stamp a lease (``locked_by``/``locked_until``) on due deliveries
nobody holds; PostgreSQL adds ``FOR UPDATE SKIP LOCKED`` so several workers
share the work, SQLite serialises writers anyway. A dispatcher that dies
mid-batch leaves deliveries that become due again when the lease ends; one
that crashes after a receiver answered but before the outcome is stored sends
again, with the same ``webhook-id`` so the receiver can drop the duplicate.

Deliveries run in parallel (``max_in_flight`` over all endpoints), so the
order of messages per endpoint is **not** kept; receivers order by the
payload's ``timestamp`` where it matters.

Outcomes: 2xx delivered; 408, 425, 429, 5xx, timeouts and connection errors
are retried on the schedule (a later ``Retry-After`` wins); other 3xx and 4xx
are permanent: the delivery becomes a dead letter at once; 410 Gone also
disables the endpoint. A destination the outbound guard refuses is never
contacted and the delivery is a dead letter. After the last retry the
delivery is a dead letter too (inspect, replay, purge).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import and_, bindparam, delete, insert, or_, select, update

from chronos.plugin import (
    Delivery,
    DeliveryResult,
    JobContext,
    OutboundRefused,
    OutboxMessage,
    PluginContext,
    Resource,
    TemplateRenderer,
    outbound_client,
    type_matches,
    utcnow,
    webhook_signing,
)

from chronos_webhooks.models import AttemptRow, DeliveryRow, EndpointRow, OutboxRow
from chronos_webhooks.outbox import DISPATCH_REQUESTS
from chronos_webhooks.service import purge_delivered
from chronos_webhooks.settings import WebhooksSettings
from chronos_webhooks.sink import ENDPOINT_FILTERS

log = structlog.get_logger("chronos.webhooks")

DELIVERIES = Counter(
    "chronos_outbox_deliveries_total", "Outbox delivery attempts by target and outcome", ["target", "outcome"]
)
LATENCY = Histogram(
    "chronos_outbox_delivery_seconds",
    "Outbox delivery attempt latency by target",
    ["target"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
WEBHOOK = "webhook"
USER_AGENT = "Chronos-Webhooks/1"
MAX_RETRY_AFTER = 86400.0
PURGE_EVERY_SECONDS = 3600.0


@dataclass
class Claimed:
    id: int
    attempt: int
    target: str
    message: OutboxMessage
    endpoint_id: int | None
    url: str | None
    keys: list[bytes]
    template_id: int | None
    disabled: str | None  # why the endpoint no longer takes deliveries


@dataclass
class Result:
    claimed: Claimed
    result: DeliveryResult
    latency_ms: float
    attempted_at: datetime


def active_keys(secrets: list[dict[str, Any]], now: datetime) -> list[bytes]:
    """The keys of an endpoint's unexpired secrets, newest first."""
    out = []
    for entry in sorted(secrets, key=lambda e: e.get("created_at", ""), reverse=True):
        expires = entry.get("expires_at")
        if expires and datetime.fromisoformat(expires.replace("Z", "+00:00")) <= now:
            continue
        out.append(webhook_signing.secret_key(entry["secret"]))
    return out


def endpoint_matches(endpoint: EndpointRow, message: OutboxRow) -> bool:
    if not any(type_matches(p, message.event_type) for p in endpoint.event_types):
        return False
    # A calendar filter applies to messages about a calendar; others (commands, mail) pass it.
    return not endpoint.calendars or message.calendar_id is None or message.calendar_id in endpoint.calendars


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header as seconds from now (delta-seconds or an HTTP date), capped at one day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER)


def classify(response: httpx.Response, excerpt: str, now: datetime) -> DeliveryResult:
    code = response.status_code
    if 200 <= code < 300:
        return DeliveryResult.delivered(code, excerpt)
    detail = f"HTTP {code}"
    if code == 410:
        return DeliveryResult("gone", status_code=code, detail=detail, response_excerpt=excerpt)
    if code in (408, 425, 429) or code >= 500:
        after = retry_after_seconds(response.headers.get("retry-after"), now)
        return DeliveryResult("retry", retry_after=after, status_code=code, detail=detail, response_excerpt=excerpt)
    return DeliveryResult("failed", status_code=code, detail=detail, response_excerpt=excerpt)


def message_body(message: OutboxMessage) -> bytes:
    """The Standard Webhooks payload: type, the event's timestamp and its data; minified JSON."""
    doc = {
        "type": message.event_type,
        "timestamp": message.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": message.payload,
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Dispatcher:
    """The job function, the shared HTTP client and the claim/record steps; one per app."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.runner_id = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._client: httpx.AsyncClient | None = None
        self._purged_at = -PURGE_EVERY_SECONDS

    @property
    def settings(self) -> WebhooksSettings:
        return self.ctx.section(WebhooksSettings)

    def client(self) -> httpx.AsyncClient:
        """One pooled client per app; every request passes the kernel's outbound guard."""
        if self._client is None:
            s = self.settings
            self._client = outbound_client(
                self.ctx,
                timeout=s.timeout_seconds,
                # Only the excerpt is ever read (the stream is closed after it), so a huge answer costs
                # nothing and its status still counts: the guard's cap must not turn a 2xx into a failure.
                max_response_bytes=2**62,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=s.max_in_flight, max_keepalive_connections=s.max_in_flight),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- the job ----------------------------------------------------------------------

    async def run(self, job: JobContext | None = None) -> dict[str, int]:
        counts = {"fanned_out": 0, "delivered": 0, "retry": 0, "dead": 0}
        await self.purge_now_and_then()
        requests = self.ctx.resource(DISPATCH_REQUESTS)
        settings = self.settings
        while True:
            requests.pending = False
            fanned = await self.fan_out(settings.batch_size)
            counts["fanned_out"] += fanned
            batch = await self.claim(settings.batch_size)
            if not batch:
                if fanned or requests.pending:
                    continue
                break
            results = await self.attempt_all(batch)
            for status in await self.record(results):
                counts[status] += 1
            if self.ctx.jobs is not None and self.ctx.jobs.stopping:
                break
        return counts

    async def purge_now_and_then(self) -> None:
        """At most once an hour per process: delete what ``retention_days`` no longer keeps."""
        now = time.monotonic()
        if now - self._purged_at < PURGE_EVERY_SECONDS:
            return
        self._purged_at = now
        try:
            purged = await purge_delivered(self.ctx, timedelta(days=self.settings.retention_days))
        except Exception as exc:  # noqa: BLE001 - housekeeping must not stop deliveries
            log.warning("outbox_purge_failed", error=str(exc))
            return
        if any(purged.values()):
            log.info("outbox_purged", **purged)

    # -- fan-out ----------------------------------------------------------------------

    async def fan_out(self, limit: int) -> int:
        """Create the deliveries of up to ``limit`` new messages; returns how many messages."""
        now = utcnow()
        async with self.ctx.db.write() as s:
            q = select(OutboxRow).where(OutboxRow.fanned_out.is_(False)).order_by(OutboxRow.id).limit(limit)
            if not self.ctx.db.is_sqlite:
                q = q.with_for_update(skip_locked=True)
            messages = list((await s.execute(q)).scalars())
            if not messages:
                return 0
            endpoints = list((await s.execute(select(EndpointRow).where(EndpointRow.enabled.is_(True)))).scalars())
            targets = self.ctx.delivery_targets
            rows: list[dict[str, Any]] = []

            def add(message: OutboxRow, target: str, endpoint_id: int | None) -> None:
                rows.append(
                    {
                        "message_id": message.id,
                        "endpoint_id": endpoint_id,
                        "target": target,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                )

            known = {e.id for e in endpoints}
            for m in messages:
                if m.endpoint_id is not None:  # a test message for one endpoint
                    if m.endpoint_id in known:
                        add(m, WEBHOOK, m.endpoint_id)
                    continue
                for e in endpoints:
                    if endpoint_matches(e, m):
                        add(m, WEBHOOK, e.id)
                for name, target in targets.items():
                    try:
                        accepts = target.accepts(m.event_type)
                    except Exception:  # noqa: BLE001 - a broken target must not stop the outbox
                        log.exception("delivery_target_accepts_failed", target=name)
                        accepts = False
                    if accepts:
                        add(m, name, None)
            if rows:
                await s.execute(insert(DeliveryRow), rows)
            # A message nobody subscribed to is done: it is not kept.
            taken = {r["message_id"] for r in rows}
            unsubscribed = [m.id for m in messages if m.id not in taken]
            if unsubscribed:
                await s.execute(delete(OutboxRow).where(OutboxRow.id.in_(unsubscribed)))
            if taken:
                await s.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id.in_(sorted(taken)))
                    .values(fanned_out=True)
                    .execution_options(synchronize_session=False)
                )
        return len(messages)

    # -- claims -----------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Claimed]:
        settings = self.settings
        now = utcnow()
        rounds = math.ceil(limit / settings.max_in_flight)
        lease = now + timedelta(seconds=max(settings.lease_seconds, rounds * settings.timeout_seconds + 30))
        async with self.ctx.db.write() as s:
            q = (
                select(DeliveryRow.id)
                .where(
                    DeliveryRow.status == "pending",
                    DeliveryRow.next_attempt_at <= now,
                    or_(DeliveryRow.locked_until.is_(None), DeliveryRow.locked_until < now),
                )
                .order_by(DeliveryRow.next_attempt_at, DeliveryRow.id)
                .limit(limit)
            )
            if not self.ctx.db.is_sqlite:
                q = q.with_for_update(skip_locked=True)
            ids = list((await s.execute(q)).scalars())
            if not ids:
                return []
            await s.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id.in_(ids))
                .values(locked_by=self.runner_id, locked_until=lease, attempts=DeliveryRow.attempts + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            rows = (
                await s.execute(
                    select(
                        DeliveryRow.id,
                        DeliveryRow.attempts,
                        DeliveryRow.target,
                        DeliveryRow.endpoint_id,
                        OutboxRow,
                        EndpointRow,
                    )
                    .join(OutboxRow, OutboxRow.id == DeliveryRow.message_id)
                    .outerjoin(EndpointRow, EndpointRow.id == DeliveryRow.endpoint_id)
                    .where(DeliveryRow.id.in_(ids))
                    .order_by(DeliveryRow.id)
                )
            ).all()
        out = []
        for did, attempts, target, endpoint_id, m, e in rows:
            message = OutboxMessage(m.id, m.event_type, m.payload, m.created_at, m.webhook_id, m.dedupe_key)
            disabled = None
            keys: list[bytes] = []
            if target == WEBHOOK:
                if e is None or not e.enabled:
                    disabled = "the endpoint is disabled" + (
                        f" ({e.disabled_reason})" if e and e.disabled_reason else ""
                    )
                else:
                    keys = active_keys(e.secrets, now)
            elif target not in self.ctx.delivery_targets:
                disabled = f"delivery target {target!r} is not enabled"
            out.append(
                Claimed(
                    did,
                    attempts,
                    target,
                    message,
                    endpoint_id,
                    e.url if e is not None else None,
                    keys,
                    e.template_id if e is not None else None,
                    disabled,
                )
            )
        return out

    # -- attempts ---------------------------------------------------------------------

    async def attempt_all(self, batch: list[Claimed]) -> list[Result]:
        limit = asyncio.Semaphore(self.settings.max_in_flight)

        async def one(c: Claimed) -> Result:
            async with limit:
                return await self.attempt(c)

        return list(await asyncio.gather(*(one(c) for c in batch)))

    async def attempt(self, c: Claimed) -> Result:
        started = time.perf_counter()
        at = utcnow()
        if c.disabled is not None:
            return Result(c, DeliveryResult.failed(c.disabled), 0.0, at)
        try:
            if c.target == WEBHOOK:
                result = await self.post(c, at)
            else:
                target = self.ctx.delivery_targets[c.target]
                delivery = Delivery(c.id, c.message, c.attempt, c.target)
                result = await asyncio.wait_for(target.deliver(delivery), self.settings.timeout_seconds)
                if not isinstance(result, DeliveryResult):
                    result = DeliveryResult.retry(f"the target returned {type(result).__name__}, not a DeliveryResult")
        except asyncio.CancelledError:
            raise
        except OutboundRefused as exc:
            result = DeliveryResult.failed(f"refused by the outbound guard: {exc}"[:1000])
        except (TimeoutError, httpx.TimeoutException):
            result = DeliveryResult.retry(f"no answer within {self.settings.timeout_seconds:g} s")
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the attempt
            result = DeliveryResult.retry(f"{type(exc).__name__}: {exc}"[:1000])
        return Result(c, result, (time.perf_counter() - started) * 1000, at)

    async def body_of(self, c: Claimed) -> tuple[bytes, str]:
        """The request body and its content type: the standard payload, or the endpoint's template rendered."""
        if c.template_id is None:
            return message_body(c.message), "application/json"
        if not self.ctx.has_service(TemplateRenderer):
            raise TemplateUnavailable("the endpoint uses a template but the templates plugin is not enabled")
        variables = {
            "type": c.message.event_type,
            "timestamp": c.message.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "webhook_id": c.message.webhook_id,
            "data": c.message.payload,
        }
        rendered = await self.ctx.service(TemplateRenderer).render_webhook(c.template_id, variables)
        body = rendered if isinstance(rendered, (bytes, str)) else json.dumps(rendered, separators=(",", ":"))
        return (body.encode("utf-8") if isinstance(body, str) else body), "application/json"

    async def post(self, c: Claimed, at: datetime) -> DeliveryResult:
        assert c.url is not None
        try:
            body, content_type = await self.body_of(c)
        except TemplateUnavailable as exc:
            return DeliveryResult.failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a template that fails to render is a permanent failure
            return DeliveryResult.failed(f"the body template failed to render: {exc}"[:1000])
        headers = {
            "Content-Type": content_type,
            "User-Agent": USER_AGENT,
            **webhook_signing.signature_headers(c.keys, c.message.webhook_id, int(at.timestamp()), body),
        }
        limit = self.settings.response_excerpt_bytes
        async with self.client().stream("POST", c.url, content=body, headers=headers) as response:
            excerpt = b""
            if limit:
                async for chunk in response.aiter_raw():
                    excerpt += chunk
                    if len(excerpt) >= limit:
                        break  # the rest is never read
        text = excerpt[:limit].decode("utf-8", errors="replace")
        return classify(response, text, utcnow())

    # -- outcomes ---------------------------------------------------------------------

    def next_delay(self, attempts: int, retry_after: float | None) -> float | None:
        """Seconds until the next try after ``attempts`` tries, or None when retries are exhausted."""
        schedule = self.settings.retry_schedule_seconds
        if attempts > len(schedule):
            return None
        base = schedule[attempts - 1]
        jitter = self.settings.jitter_ratio
        delay = base * (1 + random.uniform(-jitter, jitter)) if base else 0.0
        return max(delay, retry_after or 0.0)

    async def record(self, results: list[Result]) -> list[str]:
        now = utcnow()
        attempts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        gone: dict[int, str] = {}
        statuses: list[str] = []
        for r in results:
            c, res = r.claimed, r.result
            values: dict[str, Any] = {
                "b_id": c.id,
                "b_lock": self.runner_id,
                "last_status_code": res.status_code,
                "last_error": None if res.outcome == "delivered" else (res.detail or res.outcome)[:2000],
                "locked_by": None,
                "locked_until": None,
                "updated_at": now,
                "delivered_at": None,
                "dead_at": None,
                "next_attempt_at": None,
            }
            status = "dead"
            if res.outcome == "delivered":
                status = "delivered"
                values.update(status="delivered", delivered_at=now)
            elif res.outcome == "retry":
                delay = self.next_delay(c.attempt, res.retry_after)
                if delay is not None:
                    status = "retry"
                    values.update(status="pending", next_attempt_at=now + timedelta(seconds=delay))
                else:
                    values["last_error"] = f"{values['last_error']} (after {c.attempt} attempts)"[:2000]
            if status == "dead":
                values.update(status="dead", dead_at=now)
                if res.outcome == "gone" and c.endpoint_id is not None:
                    gone[c.endpoint_id] = f"410 Gone at {now.isoformat()}"
            updates.append(values)
            statuses.append(status)
            if c.disabled is None:
                attempts.append(
                    {
                        "delivery_id": c.id,
                        "endpoint_id": c.endpoint_id,
                        "attempt": c.attempt,
                        "attempted_at": r.attempted_at,
                        "outcome": res.outcome,
                        "status_code": res.status_code,
                        "latency_ms": round(r.latency_ms, 3),
                        "error": None if res.outcome == "delivered" else (res.detail or None),
                        "response_excerpt": res.response_excerpt or None,
                    }
                )
                DELIVERIES.labels(c.target, res.outcome).inc()
                LATENCY.labels(c.target).observe(r.latency_ms / 1000)
        table = DeliveryRow.__table__
        stmt = (
            update(table)
            .where(and_(table.c.id == bindparam("b_id"), table.c.locked_by == bindparam("b_lock")))
            .values(
                status=bindparam("status"),
                last_status_code=bindparam("last_status_code"),
                last_error=bindparam("last_error"),
                locked_by=bindparam("locked_by"),
                locked_until=bindparam("locked_until"),
                updated_at=bindparam("updated_at"),
                delivered_at=bindparam("delivered_at"),
                dead_at=bindparam("dead_at"),
                next_attempt_at=bindparam("next_attempt_at"),
            )
        )
        async with self.ctx.db.write() as s:
            if attempts:
                await s.execute(insert(AttemptRow), attempts)
            conn = await s.connection()
            await conn.execute(stmt, updates)
            for endpoint_id, reason in gone.items():
                await s.execute(
                    update(EndpointRow)
                    .where(EndpointRow.id == endpoint_id)
                    .values(enabled=False, disabled_reason=reason, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
            if gone:
                self.ctx.resource(ENDPOINT_FILTERS).changed()
        for endpoint_id in gone:
            log.warning("webhook_endpoint_disabled", endpoint_id=endpoint_id, reason="410 Gone")
        return statuses


class TemplateUnavailable(Exception):
    """The endpoint names a body template but no renderer is available."""


DISPATCHER: Resource[Dispatcher] = Resource("webhooks.dispatcher", Dispatcher, close=Dispatcher.aclose)
