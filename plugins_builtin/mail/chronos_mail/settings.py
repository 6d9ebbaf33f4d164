"""Settings section ``mail``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from chronos_mail.addresses import parse_address


class SmtpSettings(BaseModel):
    """``mail.smtp``: how to reach the SMTP server."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("localhost", min_length=1, max_length=255, description="SMTP server host name or IP.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Port; default 465 with tls, else 25 (587 is usual with starttls)."
    )
    tls: bool = Field(False, description="Implicit TLS from the first byte (SMTPS, port 465).")
    starttls: bool | None = Field(
        None, description="true: require STARTTLS; false: never; null: upgrade when the server offers it."
    )
    validate_certs: bool = Field(True, description="Verify the server's TLS certificate.")
    username: str | None = Field(None, max_length=255, description="Login name; no login when empty.")
    password: SecretStr | None = Field(
        None, description="Only from the environment: CHRONOS__MAIL__SMTP__PASSWORD. Never logged or returned."
    )
    password_file: Path | None = Field(None, description="A file holding the password (e.g. a container secret).")
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="Timeout of each SMTP command, connect included.")
    local_hostname: str | None = Field(
        None, max_length=255, description="Name sent in EHLO (default: this host's FQDN)."
    )
    allow_plaintext_auth: bool = Field(
        False,
        description="Log in (send username and password) over an unencrypted connection."
        " Off: a login needs tls or STARTTLS, and a server that offers no STARTTLS gets no password.",
    )

    @model_validator(mode="after")
    def _no_plaintext_login(self) -> SmtpSettings:
        if self.username and not self.tls and self.starttls is False and not self.allow_plaintext_auth:
            raise ValueError(
                "username is set but the connection is unencrypted (tls: false, starttls: false):"
                " set mail.smtp.tls or mail.smtp.starttls to true, or mail.smtp.allow_plaintext_auth: true"
                " to send the password in the clear"
            )
        return self


class RetrySettings(BaseModel):
    """``mail.retry``: temporary failures (4xx, refused connections, timeouts)."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(8, ge=1, le=100, description="Attempts before a delivery is marked failed.")
    base_seconds: float = Field(30.0, ge=0, le=86400, description="First back-off; doubles per attempt, with jitter.")
    max_seconds: float = Field(3600.0, ge=0, le=7 * 86400, description="Upper bound of one back-off.")


class MailSettings(BaseModel):
    """Section ``mail:`` in config/chronos.yaml."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | None = Field(
        None, alias="from", description='Sender, e.g. "Chronos <chronos@example.com>". Sending needs it.'
    )
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    send_timeout_seconds: float = Field(
        120.0, gt=0, le=3600, description="Limit for one message, from connecting to the server's final reply."
    )
    batch_size: int = Field(10, ge=1, le=500, description="Deliveries one sender claims at a time.")
    poll_interval_seconds: float = Field(
        60.0, gt=0, description="The sender also runs on this schedule, picking up retries and anything missed."
    )
    max_recipients: int = Field(50, ge=1, le=1000, description="To, Cc and Bcc together.")
    max_attachment_bytes: int = Field(
        5 * 1024 * 1024, ge=0, description="Total decoded size of a message's attachments; larger gets 413."
    )
    max_body_chars: int = Field(2_000_000, ge=1000, description="Largest html or text part.")
    message_id_domain: str | None = Field(
        None, max_length=255, description="Domain of Message-IDs (default: the sender's)."
    )

    @field_validator("from_")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return str(parse_address(value, allow_single_label=True))
