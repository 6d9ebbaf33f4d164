"""The delivery target: one Bot API ``sendMessage`` per outbox delivery.

Answers map onto the outbox's outcomes: ``ok`` is delivered; 429 is a retry
after Telegram's ``retry_after``; 5xx, timeouts and unreachable servers are
retries on the outbox's schedule; 403 (the bot was blocked or removed from the
chat) is ``gone``; other refusals (a bad token, markup Telegram cannot parse,
an unknown chat) are ``failed`` and go to the dead letters at once.

The token sits in the URL's path (``/bot<token>/sendMessage``): it is removed
from every detail recorded with an attempt, and the kernel reduces URLs in
log lines to their scheme and host.
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

from chronos_telegram.render import render
from chronos_telegram.settings import TelegramSettings

API_BASE = "https://api.telegram.org"
MAX_ANSWER_BYTES = 256 * 1024


class TelegramTarget(DeliveryTarget):
    """Sends outbox messages to ``telegram.chat_id``."""

    name = "telegram"

    def __init__(self, ctx: PluginContext, settings: TelegramSettings, *, api_base: str = API_BASE) -> None:
        self.ctx = ctx
        self.settings = settings
        self.api_base = api_base.rstrip("/")

    def accepts(self, event_type: str) -> bool:
        return any(type_matches(p, event_type) for p in self.settings.event_types)

    def body(self, delivery: Delivery) -> dict[str, Any]:
        """The sendMessage request body for ``delivery``."""
        s = self.settings
        return {
            "chat_id": s.chat_id,
            "text": render(s.template_text(), delivery.message, s.parse_mode),
            "parse_mode": s.parse_mode,
            "link_preview_options": {"is_disabled": True},
            "disable_notification": s.disable_notification,
        }

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        try:
            token = self.settings.token()
        except OSError as exc:
            return DeliveryResult.failed(f"cannot read telegram.bot_token_file: {exc.strerror or type(exc).__name__}")
        if not token:
            return DeliveryResult.failed("no bot token: set CHRONOS__TELEGRAM__BOT_TOKEN or telegram.bot_token_file")
        url = f"{self.api_base}/bot{token}/sendMessage"
        timeout = self.settings.timeout_seconds
        try:
            async with outbound_client(self.ctx, timeout=timeout, max_response_bytes=MAX_ANSWER_BYTES) as client:
                response = await client.post(url, json=self.body(delivery))
                answer = _json(response)
        except OutboundRefused as exc:
            return DeliveryResult.failed(_scrub(str(exc), token))
        except ResponseTooLarge:
            return DeliveryResult.retry("the Bot API's answer was larger than expected")
        except httpx.TimeoutException:
            return DeliveryResult.retry(f"no answer from the Bot API within {timeout:g}s")
        except httpx.HTTPError as exc:
            return DeliveryResult.retry(_scrub(f"cannot reach the Bot API: {type(exc).__name__}: {exc}", token))
        return classify(response.status_code, answer, response.headers.get("retry-after"), token)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _scrub(text: str, token: str) -> str:
    """``text`` without the token (nor its secret half, which is what makes it a credential)."""
    secret = token.split(":", 1)[-1]
    return text.replace(token, "<token>").replace(secret, "<token>")


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def classify(status: int, answer: dict[str, Any], retry_after_header: str | None, token: str) -> DeliveryResult:
    """The outbox outcome of one sendMessage answer."""
    if answer.get("ok") is True and 200 <= status < 300:
        result = answer.get("result")
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return DeliveryResult.delivered(status, f"message_id {message_id}" if message_id is not None else "")
    code = answer.get("error_code") if isinstance(answer.get("error_code"), int) else status
    description = _scrub(str(answer.get("description") or f"HTTP {status}"), token)[:300]
    parameters = answer.get("parameters") if isinstance(answer.get("parameters"), dict) else {}
    if code == 429:
        after = _seconds(parameters.get("retry_after")) or _seconds(retry_after_header)
        return DeliveryResult.retry(f"rate limited by Telegram: {description}", after=after, status_code=status)
    if "migrate_to_chat_id" in parameters:
        new_id = parameters["migrate_to_chat_id"]
        return DeliveryResult.failed(
            f"the group is now a supergroup: set telegram.chat_id to {new_id}", status_code=status
        )
    if code in (401, 404):
        return DeliveryResult.failed(f"Telegram refused the bot token ({description})", status_code=status)
    if code == 403:
        return DeliveryResult.gone(f"the bot cannot post to the chat: {description}", status_code=status)
    if code >= 500 or code in (408, 425):
        return DeliveryResult.retry(f"Telegram is unavailable: {description}", status_code=status)
    return DeliveryResult.failed(f"Telegram refused the message: {description}", status_code=status)
