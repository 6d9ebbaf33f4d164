"""The Block Kit body: the configured template with ``{{ placeholders }}`` filled in, every value escaped.

Values come from outbox messages, so Slack's control characters in them are
escaped (``&``, ``<``, ``>``): a payload cannot mention ``<!channel>``, link or
format beyond what the template says. Placeholders name fields of the message
(``{{ event_type }}``, ``{{ title }}``, ``{{ details }}``, ``{{ created_at }}``,
``{{ webhook_id }}``) or of its payload (``{{ payload.title }}``); an unknown
one is empty. Nothing is evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from chronos.plugin import OutboxMessage, message_title, shorten, value_text

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\s*\}\}")
#: Block Kit's limits on the texts we fill (header and everything else).
HEADER_MAX = 150
TEXT_MAX = 3000


def escape(text: str) -> str:
    """Slack's escaping for text in messages and blocks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def details_of(payload: Any, *, value_limit: int = 300, max_lines: int = 25) -> str:
    """The payload's fields, one ``*name:* value`` line each (nested values as compact JSON)."""
    if not isinstance(payload, Mapping):
        return escape(shorten(value_text(payload), value_limit))
    lines = [
        f"*{escape(str(key))}:* {escape(shorten(value_text(value), value_limit))}"
        for key, value in payload.items()
        if value not in (None, "")
    ]
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"… {len(lines) - max_lines} more"]
    return shorten("\n".join(lines), TEXT_MAX - 100)


def fields_of(message: OutboxMessage) -> dict[str, Any]:
    return {
        "event_type": message.event_type,
        "title": message_title(message),
        "created_at": message.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "webhook_id": message.webhook_id,
        "payload": message.payload,
    }


def _lookup(fields: Mapping[str, Any], path: str) -> Any:
    current: Any = fields
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def fill(template: str, message: OutboxMessage, *, limit: int = TEXT_MAX) -> str:
    """``template`` with its placeholders replaced by escaped values, at most ``limit`` characters."""
    fields = fields_of(message)

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "details":
            return details_of(message.payload)  # escaped line by line; its markup is ours
        return escape(shorten(value_text(_lookup(fields, name)), 300))

    return shorten(PLACEHOLDER.sub(one, template), limit)


def blocks(template: list[dict[str, Any]], message: OutboxMessage) -> list[dict[str, Any]]:
    """The template's blocks with every string filled (a header's text within its 150 characters)."""

    def walk(node: Any, limit: int) -> Any:
        if isinstance(node, str):
            return fill(node, message, limit=limit)
        if isinstance(node, list):
            return [walk(item, limit) for item in node]
        if isinstance(node, dict):
            inner = HEADER_MAX if node.get("type") == "header" else limit
            return {key: walk(value, inner) for key, value in node.items()}
        return node

    return [walk(block, TEXT_MAX) for block in template]
