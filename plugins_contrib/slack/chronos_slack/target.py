"""The delivery target: one Slack message per outbox delivery.

Two ways in: an incoming webhook (POST the body to its URL; Slack answers
``ok`` or an error word as text) or the Web API's ``chat.postMessage`` with a
bot token (JSON ``{"ok": …, "error": …}``). Answers map onto the outbox's
outcomes: success is delivered; 429 (``ratelimited``) retries after Slack's
Retry-After; 5xx and Slack's own temporary errors, timeouts and unreachable
servers retry on the outbox's schedule; a revoked webhook, an unknown or
archived channel is ``gone``; other refusals (invalid blocks, a bad token)
are ``failed``. The webhook URL and the token are credentials: neither is
ever part of a recorded detail.
"""

from __future__ import annotations

from typing import Any

import httpx

from chronos.plugin import (
    Delivery,
    DeliveryResult,
    DeliveryTarget,
    OutboundRefused,
    PluginContext,
    ResponseTooLarge,
    outbound_client,
    type_matches,
)

from chronos_slack.render import blocks, fill
from chronos_slack.settings import SlackSettings

API_BASE = "https://slack.com/api"
MAX_ANSWER_BYTES = 256 * 1024
#: chat.postMessage errors that say the channel is not there (any more) for this bot.
GONE = {"channel_not_found", "is_archived", "channel_is_archived", "not_in_channel"}
#: ... and those that are worth another try.
TEMPORARY = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}


class SlackTarget(DeliveryTarget):
    """Posts outbox messages to one Slack channel."""

    name = "slack"

    def __init__(self, ctx: PluginContext, settings: SlackSettings, *, api_base: str = API_BASE) -> None:
        self.ctx = ctx
        self.settings = settings
        self.api_base = api_base.rstrip("/")

    def accepts(self, event_type: str) -> bool:
        return any(type_matches(p, event_type) for p in self.settings.event_types)

    def body(self, delivery: Delivery) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {"text": fill(s.text, delivery.message)}
        if s.blocks:
            body["blocks"] = blocks(s.blocks, delivery.message)
        if not s.uses_webhook:
            body["channel"] = s.channel
            body["unfurl_links"] = False
        return body

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        s = self.settings
        try:
            secret = s.webhook() if s.uses_webhook else s.token()
        except OSError as exc:
            which = "webhook_url_file" if s.uses_webhook else "bot_token_file"
            return DeliveryResult.failed(f"cannot read slack.{which}: {exc.strerror or type(exc).__name__}")
        if not secret:
            return DeliveryResult.failed(
                "no Slack credentials: set CHRONOS__SLACK__WEBHOOK_URL or CHRONOS__SLACK__BOT_TOKEN"
            )
        if s.uses_webhook:
            url, headers = secret, {}
        else:
            url, headers = f"{self.api_base}/chat.postMessage", {"Authorization": f"Bearer {secret}"}
        try:
            async with outbound_client(self.ctx, timeout=s.timeout_seconds, max_response_bytes=MAX_ANSWER_BYTES) as c:
                response = await c.post(url, json=self.body(delivery), headers=headers)
                text = response.text
        except OutboundRefused as exc:
            return DeliveryResult.failed(_scrub(str(exc), secret))
        except ResponseTooLarge:
            return DeliveryResult.retry("Slack's answer was larger than expected")
        except httpx.TimeoutException:
            return DeliveryResult.retry(f"no answer from Slack within {s.timeout_seconds:g}s")
        except httpx.HTTPError as exc:
            return DeliveryResult.retry(_scrub(f"cannot reach Slack: {type(exc).__name__}: {exc}", secret))
        retry_after = _seconds(response.headers.get("retry-after"))
        if s.uses_webhook:
            return classify_webhook(response.status_code, _scrub(text, secret), retry_after)
        return classify_api(response.status_code, _json(response), retry_after)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "<secret>")


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def classify_webhook(status: int, text: str, retry_after: float | None) -> DeliveryResult:
    """An incoming webhook's answer: ``ok`` or an error word (``invalid_blocks``, ``no_service`` …)."""
    word = text.strip()[:200] or f"HTTP {status}"
    if 200 <= status < 300:
        return DeliveryResult.delivered(status, word[:50])
    if status == 429:
        return DeliveryResult.retry(f"rate limited by Slack: {word}", after=retry_after, status_code=status)
    if status in (404, 410):  # no_service (the webhook was removed), channel_not_found, channel_is_archived
        return DeliveryResult.gone(f"the webhook's channel is gone: {word}", status_code=status)
    if status >= 500 or status in (408, 425):
        return DeliveryResult.retry(f"Slack is unavailable: {word}", status_code=status)
    return DeliveryResult.failed(f"Slack refused the message: {word}", status_code=status)


def classify_api(status: int, answer: dict[str, Any], retry_after: float | None) -> DeliveryResult:
    """A chat.postMessage answer: ``{"ok": true, "ts": …}`` or ``{"ok": false, "error": …}``."""
    if answer.get("ok") is True and 200 <= status < 300:
        return DeliveryResult.delivered(status, f"ts {answer.get('ts')}" if answer.get("ts") else "")
    error = str(answer.get("error") or f"HTTP {status}")[:200]
    if status == 429 or error == "ratelimited":
        return DeliveryResult.retry(f"rate limited by Slack: {error}", after=retry_after, status_code=status)
    if error in GONE:
        return DeliveryResult.gone(f"the channel is not reachable for the bot: {error}", status_code=status)
    if error in TEMPORARY or status >= 500:
        return DeliveryResult.retry(f"Slack is unavailable: {error}", status_code=status)
    return DeliveryResult.failed(f"Slack refused the message: {error}", status_code=status)
