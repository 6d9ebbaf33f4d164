"""Message text: a template with ``{{ placeholders }}``, every value escaped for Telegram's parse mode.

The template is the operator's (it may use the parse mode's markup); values come
from outbox messages, so they are escaped and cannot add markup of their own.
Placeholders name fields of the message (``{{ event_type }}``, ``{{ title }}``,
``{{ details }}``, ``{{ created_at }}``, ``{{ webhook_id }}``) or of its payload
(``{{ payload.title }}``, ``{{ payload.source.calendar_id }}``); an unknown one
is empty. Nothing is evaluated: a placeholder is a path, not an expression.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

from chronos.plugin import OutboxMessage, message_title, shorten, value_text

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\s*\}\}")
#: Telegram's limit for one message's text, counted after the markup is parsed; we count before (stricter).
MAX_MESSAGE = 4096
_MARKDOWN_V2_SPECIAL = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")


def escape_html(text: str) -> str:
    """Text for ``parse_mode=HTML``: only ``&``, ``<`` and ``>`` are special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_markdown_v2(text: str) -> str:
    """Text for ``parse_mode=MarkdownV2``: every character of ``_*[]()~`>#+-=|{}.!`` and ``\\`` escaped."""
    return _MARKDOWN_V2_SPECIAL.sub(r"\\\1", text)


ESCAPES: dict[str, Callable[[str], str]] = {"HTML": escape_html, "MarkdownV2": escape_markdown_v2}


def details_of(payload: Any, *, value_limit: int, max_lines: int = 25) -> str:
    """The payload's fields, one ``name: value`` line each (nested values as compact JSON)."""
    if not isinstance(payload, Mapping):
        return shorten(value_text(payload), value_limit)
    lines = [
        f"{key}: {shorten(value_text(value), value_limit)}" for key, value in payload.items() if value not in (None, "")
    ]
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"… {len(lines) - max_lines} more"]
    return "\n".join(lines)


def message_fields(message: OutboxMessage, *, value_limit: int = 300) -> dict[str, Any]:
    created = message.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {
        "event_type": message.event_type,
        "title": message_title(message),
        "details": details_of(message.payload, value_limit=value_limit),
        "created_at": created,
        "webhook_id": message.webhook_id,
        "payload": message.payload,
    }


def lookup(fields: Mapping[str, Any], path: str) -> Any:
    current: Any = fields
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def render(template: str, message: OutboxMessage, parse_mode: str) -> str:
    """The message text; values are shortened until the whole fits Telegram's limit."""
    escape = ESCAPES[parse_mode]
    text = ""
    for value_limit, details_limit in ((300, 3000), (80, 1500), (20, 600)):
        fields = message_fields(message, value_limit=value_limit)

        def one(
            match: re.Match[str],
            fields: dict[str, Any] = fields,
            limits: tuple[int, int] = (value_limit, details_limit),
        ) -> str:
            name = match.group(1)
            return escape(shorten(value_text(lookup(fields, name)), limits[1] if name == "details" else limits[0]))

        text = PLACEHOLDER.sub(one, template)
        if len(text) <= MAX_MESSAGE:
            return text
    return text
