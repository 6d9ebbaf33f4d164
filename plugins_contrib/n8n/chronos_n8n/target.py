"""The delivery target: one signed POST to the workflow's Webhook node per outbox delivery.

The body is the Standard Webhooks payload ``{"type", "timestamp", "data"}``
(minified JSON), signed as :mod:`chronos_n8n.signing` describes. n8n answers a
2xx once the workflow took the request; 404 (the workflow is not active, or
its path changed) and 5xx, 408, 425, 429, timeouts and unreachable servers are
retried on the outbox's schedule (429 and 503 after their Retry-After); 410 is
``gone``; other refusals (401/403 from Header Auth, 400, 422) are ``failed``.
Details name the URL's scheme and host only.
"""

from __future__ import annotations

import json
import time
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import httpx

from chronos.plugin import (
    Delivery,
    DeliveryResult,
    DeliveryTarget,
    OutboundRefused,
    OutboxMessage,
    PluginContext,
    ResponseTooLarge,
    outbound_client,
    type_matches,
    webhook_signing,
)

from chronos_n8n.settings import N8nSettings

MAX_ANSWER_BYTES = 256 * 1024
USER_AGENT = "chronos-engine-n8n/0.1"


def body_of(message: OutboxMessage) -> bytes:
    doc = {
        "type": message.event_type,
        "timestamp": message.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": message.payload,
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def origin(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


class N8nTarget(DeliveryTarget):
    """Posts outbox messages to ``n8n.url``."""

    name = "n8n"

    def __init__(self, ctx: PluginContext, settings: N8nSettings, *, clock: Any = time.time) -> None:
        self.ctx = ctx
        self.settings = settings
        self.clock = clock

    def accepts(self, event_type: str) -> bool:
        return any(type_matches(p, event_type) for p in self.settings.event_types)

    def request(self, delivery: Delivery, secret: str) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one attempt (signed now: a replayed delivery gets a fresh timestamp)."""
        message = delivery.message
        body = body_of(message)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **webhook_signing.signature_headers(
                [webhook_signing.secret_key(secret)], message.webhook_id, int(self.clock()), body
            ),
        }
        s = self.settings
        if s.auth_header and s.auth_header_value is not None:
            headers[s.auth_header] = s.auth_header_value.get_secret_value()
        return body, headers

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        s = self.settings
        if not s.url:
            return DeliveryResult.failed("n8n.url is not set")
        shown = origin(s.url)
        try:
            secret = s.secret()
        except OSError as exc:
            return DeliveryResult.failed(f"cannot read n8n.signing_secret_file: {exc.strerror or type(exc).__name__}")
        if not secret:
            return DeliveryResult.failed("no signing secret: set CHRONOS__N8N__SIGNING_SECRET or signing_secret_file")
        try:
            body, headers = self.request(delivery, secret)
        except ValueError as exc:  # a malformed secret read from the file
            return DeliveryResult.failed(f"n8n.signing_secret_file: {exc}")
        try:
            async with outbound_client(self.ctx, timeout=s.timeout_seconds, max_response_bytes=MAX_ANSWER_BYTES) as c:
                response = await c.post(s.url, content=body, headers=headers)
                excerpt = response.text[:200]
        except OutboundRefused as exc:
            return DeliveryResult.failed(f"{shown} {exc}")
        except ResponseTooLarge:
            return DeliveryResult.retry(f"the answer from {shown} was larger than {MAX_ANSWER_BYTES:,} bytes")
        except httpx.TimeoutException:
            return DeliveryResult.retry(f"no answer from {shown} within {s.timeout_seconds:g}s")
        except httpx.HTTPError as exc:
            return DeliveryResult.retry(f"cannot reach {shown}: {type(exc).__name__}")
        return classify(response.status_code, excerpt, response.headers.get("retry-after"), shown)


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def classify(status: int, excerpt: str, retry_after: str | None, shown: str) -> DeliveryResult:
    detail = f"HTTP {status} from {shown}"
    if 200 <= status < 300:
        return DeliveryResult.delivered(status, excerpt)
    if status == 410:
        return DeliveryResult.gone(detail, status_code=status)
    if status == 404:
        return DeliveryResult.retry(f"{detail}: is the workflow active? ({excerpt[:120]})", status_code=status)
    if status >= 500 or status in (408, 425, 429):
        return DeliveryResult.retry(detail, after=_seconds(retry_after), status_code=status)
    return DeliveryResult.failed(f"{detail}: {excerpt[:120]}", status_code=status)
