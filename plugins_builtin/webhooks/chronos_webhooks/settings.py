"""Settings section ``webhooks``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Standard Webhooks' example schedule: the delays between attempts after the first (immediate) one.
STANDARD_SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0]


class InboundClient(BaseModel):
    """A caller that signs its requests with a shared secret instead of sending an API key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,62}$", description="Names the client in the audit log.")
    scopes: list[str] = Field(default_factory=list, description="What it may do, as an API key's scopes.")
    systems: list[str] = Field(default_factory=list, description="Command systems it is bound to (callbacks).")
    secret_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The environment variable holding its secret(s) (whsec_…, space-separated while rotating).",
    )
    secret_file: Path | None = Field(None, description="Or a file holding them (a container secret).")

    @model_validator(mode="after")
    def _one_source(self) -> InboundClient:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError(f"inbound client {self.name!r}: give secret_env or secret_file (one of them)")
        return self


class WebhooksSettings(BaseModel):
    """``webhooks``: the outbox dispatcher, its retry schedule and limits."""

    model_config = ConfigDict(extra="forbid")

    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: list(STANDARD_SCHEDULE),
        max_length=50,
        description="Delays before each retry (the first attempt is immediate); a delivery still failing after"
        " the last one becomes a dead letter. Default: Standard Webhooks' schedule (5 s, 5 min, 30 min, 2 h,"
        " 5 h, 10 h, 14 h, 20 h, 24 h: ten attempts over about three days).",
    )
    jitter_ratio: float = Field(0.1, ge=0, le=1, description="Each delay is spread by up to this fraction, up or down.")
    timeout_seconds: float = Field(15.0, gt=0, le=120, description="Timeout of one webhook request.")
    max_in_flight: int = Field(64, ge=1, le=1000, description="Requests in flight at once, over all endpoints.")
    batch_size: int = Field(500, ge=1, le=10000, description="Deliveries claimed per dispatcher round.")
    lease_seconds: float = Field(
        120.0, ge=5, le=3600, description="How long a dispatcher owns claimed deliveries before others may retry them."
    )
    poll_interval_seconds: float = Field(
        5.0, gt=0, le=3600, description="Schedule of the dispatcher (it also starts when something is published)."
    )
    response_excerpt_bytes: int = Field(
        1024, ge=0, le=65536, description="How much of a receiver's answer is kept per attempt (the rest is not read)."
    )
    secret_overlap_seconds: float = Field(
        86400.0,
        ge=0,
        le=30 * 86400,
        description="After a secret rotation, how long the previous secret keeps signing (receivers switch over).",
    )
    retention_days: float = Field(
        30.0,
        gt=0,
        le=3650,
        description="Delivered deliveries (with their attempts) and messages left without deliveries are deleted"
        " after this many days; dead letters stay until purged (chronos outbox purge-dead).",
    )
    inbound_tolerance_seconds: int = Field(
        300, ge=1, le=3600, description="Signed inbound requests: how far webhook-timestamp may be from now."
    )
    inbound_clients: list[InboundClient] = Field(
        default_factory=list,
        max_length=100,
        description="Callers that sign requests (Standard Webhooks or X-Signature/X-Timestamp) instead of sending"
        " an API key: command callbacks, POST /api/v1/events … with the scopes given here. Secrets come from the"
        " environment or a file, never from this file.",
    )
