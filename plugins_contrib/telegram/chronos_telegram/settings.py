"""Settings section ``telegram``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

#: A Bot API token as @BotFather hands it out: ``<bot id>:<secret>``.
TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,100}$")
#: A numeric chat id (groups and channels are negative) or a public channel's ``@username``.
CHAT_ID_PATTERN = r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31})$"

DEFAULT_TEMPLATES = {
    "HTML": "<b>{{ title }}</b>\n{{ details }}",
    "MarkdownV2": "*{{ title }}*\n{{ details }}",
}


class TelegramSettings(BaseModel):
    """Section ``telegram:`` in config/chronos.yaml."""

    model_config = ConfigDict(extra="forbid")

    bot_token: SecretStr | None = Field(
        None,
        description="The bot's token from @BotFather. Only from the environment: CHRONOS__TELEGRAM__BOT_TOKEN"
        " (or bot_token_file). Never logged or shown.",
    )
    bot_token_file: Path | None = Field(None, description="A file holding the bot token (e.g. a container secret).")
    chat_id: str | None = Field(
        None,
        pattern=CHAT_ID_PATTERN,
        description="Where messages go: a chat id (negative for groups and channels) or @channelusername."
        " The channel stays inactive until both a token and a chat id are set.",
    )
    event_types: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Outbox event types sent to the chat: exact types, `prefix.*` or `*`.",
    )
    parse_mode: Literal["HTML", "MarkdownV2"] = Field(
        "HTML", description="How Telegram reads the template's markup; values from messages are escaped for it."
    )
    template: str | None = Field(
        None,
        max_length=4000,
        description="The message text in the parse mode's markup, with placeholders: {{ title }}, {{ details }},"
        " {{ event_type }}, {{ created_at }}, {{ webhook_id }}, {{ payload.<field> }}. Default: the title in bold"
        " and the payload's fields, one per line.",
    )
    disable_notification: bool = Field(False, description="Deliver silently (no sound on the recipients' devices).")
    timeout_seconds: float = Field(15.0, gt=0, le=120, description="Limit for one sendMessage call.")

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not TOKEN_RE.match(value.get_secret_value()):
            raise ValueError("expected a bot token of the form <digits>:<letters, digits, _ and ->")
        return value

    @field_validator("event_types")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        for pattern in value:
            body = pattern[:-2] if pattern.endswith(".*") else pattern
            if pattern != "*" and (not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*", body)):
                raise ValueError(f"{pattern!r} is not an event type filter (a type, `prefix.*` or `*`)")
        return value

    def template_text(self) -> str:
        return self.template if self.template is not None else DEFAULT_TEMPLATES[self.parse_mode]

    def token(self) -> str | None:
        """The bot token from the environment or ``bot_token_file``; read per call, so rotation needs no restart."""
        if self.bot_token is not None:
            return self.bot_token.get_secret_value()
        if self.bot_token_file is not None:
            text = self.bot_token_file.read_text(encoding="utf-8").strip()
            return text or None
        return None
