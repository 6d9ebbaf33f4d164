"""Settings section ``n8n``."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from chronos.plugin import webhook_signing


class N8nSettings(BaseModel):
    """Section ``n8n:`` in config/chronos.yaml."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        max_length=2000,
        description="The production URL of the workflow's Webhook node (https://n8n.example/webhook/chronos)."
        " An n8n on this machine or the LAN also needs network.allow.",
    )
    signing_secret: SecretStr | None = Field(
        None,
        description="The Standard Webhooks secret (whsec_ + base64 of 24 to 64 bytes) every request is signed"
        " with. Only from the environment: CHRONOS__N8N__SIGNING_SECRET (or signing_secret_file).",
    )
    signing_secret_file: Path | None = Field(None, description="A file holding the signing secret.")
    auth_header: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Also send this header for n8n's Header Auth credential (e.g. X-Chronos-Key).",
    )
    auth_header_value: SecretStr | None = Field(
        None, description="The header's value; only from the environment: CHRONOS__N8N__AUTH_HEADER_VALUE."
    )
    event_types: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Outbox event types sent to n8n: exact types, `prefix.*` or `*`.",
    )
    timeout_seconds: float = Field(15.0, gt=0, le=120, description="Limit for one request to n8n.")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("expected the Webhook node's http:// or https:// URL")
        return value

    @field_validator("signing_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            webhook_signing.secret_key(value.get_secret_value())  # ValueError with the reason, never the value
        return value

    @field_validator("event_types")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        for pattern in value:
            body = pattern[:-2] if pattern.endswith(".*") else pattern
            if pattern != "*" and not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*", body):
                raise ValueError(f"{pattern!r} is not an event type filter (a type, `prefix.*` or `*`)")
        return value

    @model_validator(mode="after")
    def _complete(self) -> N8nSettings:
        if self.url and self.signing_secret is None and self.signing_secret_file is None:
            raise ValueError("n8n.url needs a signing secret: set CHRONOS__N8N__SIGNING_SECRET or signing_secret_file")
        if (self.auth_header is None) != (self.auth_header_value is None):
            raise ValueError("give both auth_header and its value (CHRONOS__N8N__AUTH_HEADER_VALUE), or neither")
        return self

    def secret(self) -> str | None:
        """The signing secret; read per call, so rotation needs no restart."""
        if self.signing_secret is not None:
            return self.signing_secret.get_secret_value()
        if self.signing_secret_file is not None:
            return self.signing_secret_file.read_text(encoding="utf-8").strip() or None
        return None
