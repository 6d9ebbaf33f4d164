"""Settings section ``slack``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_TEXT = "{{ title }}"
DEFAULT_BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "{{ title }}"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "{{ details }}"}},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "{{ event_type }} · {{ created_at }}"}]},
]


def _read(secret: SecretStr | None, path: Path | None) -> str | None:
    if secret is not None:
        return secret.get_secret_value()
    if path is not None:
        return path.read_text(encoding="utf-8").strip() or None
    return None


class SlackSettings(BaseModel):
    """Section ``slack:`` in config/chronos.yaml: an incoming webhook, or a bot token and a channel."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: SecretStr | None = Field(
        None,
        description="An incoming webhook URL (https://hooks.slack.com/services/…); it is a credential: only from"
        " the environment (CHRONOS__SLACK__WEBHOOK_URL) or webhook_url_file.",
    )
    webhook_url_file: Path | None = Field(None, description="A file holding the incoming webhook URL.")
    bot_token: SecretStr | None = Field(
        None,
        description="A bot token (xoxb-…) for chat.postMessage, instead of a webhook; only from the environment"
        " (CHRONOS__SLACK__BOT_TOKEN) or bot_token_file.",
    )
    bot_token_file: Path | None = Field(None, description="A file holding the bot token.")
    channel: str | None = Field(
        None,
        min_length=1,
        max_length=80,
        pattern=r"^[#@]?[A-Za-z0-9._-]+$",
        description="With a bot token: the channel id (C0123456789) or #name to post to.",
    )
    event_types: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Outbox event types sent to Slack: exact types, `prefix.*` or `*`.",
    )
    text: str = Field(
        DEFAULT_TEXT,
        min_length=1,
        max_length=3000,
        description="The message's text (notifications and clients without blocks), in Slack's mrkdwn, with"
        " the placeholders of `blocks`.",
    )
    blocks: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(b) for b in DEFAULT_BLOCKS],
        max_length=50,
        description="The Block Kit body as a template: every string may hold placeholders, {{ title }},"
        " {{ details }}, {{ event_type }}, {{ created_at }}, {{ webhook_id }} or {{ payload.<field> }}, filled with"
        " escaped values. Default: a header, the payload's fields and a context line. [] sends the text only.",
    )
    timeout_seconds: float = Field(15.0, gt=0, le=120, description="Limit for one request to Slack.")

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"xox[bp]-[A-Za-z0-9-]{10,250}", value.get_secret_value()):
            raise ValueError("expected a Slack bot token starting with xoxb-")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^https?://[^\s/]+/\S+$", value.get_secret_value()):
            raise ValueError("expected the incoming webhook's https:// URL")
        return value

    @field_validator("event_types")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        for pattern in value:
            body = pattern[:-2] if pattern.endswith(".*") else pattern
            if pattern != "*" and not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*", body):
                raise ValueError(f"{pattern!r} is not an event type filter (a type, `prefix.*` or `*`)")
        return value

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, block in enumerate(value):
            if not isinstance(block.get("type"), str):
                raise ValueError(f"block {i} has no `type` (Block Kit: header, section, context, divider …)")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> SlackSettings:
        webhook = self.webhook_url is not None or self.webhook_url_file is not None
        api = self.bot_token is not None or self.bot_token_file is not None
        if webhook and api:
            raise ValueError("give either an incoming webhook (webhook_url) or a bot token with a channel, not both")
        if api and not self.channel:
            raise ValueError("a bot token needs slack.channel (the channel id or #name to post to)")
        return self

    @property
    def configured(self) -> bool:
        return any(
            v is not None for v in (self.webhook_url, self.webhook_url_file, self.bot_token, self.bot_token_file)
        )

    @property
    def uses_webhook(self) -> bool:
        return self.webhook_url is not None or self.webhook_url_file is not None

    def webhook(self) -> str | None:
        """The incoming webhook URL; read per call, so rotation needs no restart."""
        return _read(self.webhook_url, self.webhook_url_file)

    def token(self) -> str | None:
        return _read(self.bot_token, self.bot_token_file)
