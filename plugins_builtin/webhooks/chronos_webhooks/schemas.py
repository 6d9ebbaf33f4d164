"""Request and response models of the webhooks and outbox API, and the payloads of the event types."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TYPE_FILTER_PATTERN = r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$"
SECRET_PATTERN = r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$"

TypeFilter = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=TYPE_FILTER_PATTERN,
        description="An event type (`command.failed`), a prefix (`command.*`) or `*` for every type.",
    ),
]
CalendarId = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^[^\x00]+$")]
Url = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s\x00]+$",
        description="An http(s) URL the server may reach (public addresses, or those in network.allow).",
    ),
]
Secret = Annotated[
    str,
    Field(
        pattern=SECRET_PATTERN,
        description="A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 random bytes.",
    ),
]
OutboxDeliveryStatus = Literal["pending", "delivered", "dead"]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    description: str = Field("", max_length=500, pattern=r"^[^\x00]*$")
    event_types: list[TypeFilter] = Field(
        default_factory=lambda: ["*"], min_length=1, max_length=100, description="Which messages to receive."
    )
    calendars: list[CalendarId] | None = Field(
        None,
        max_length=100,
        description="Only messages about these calendars (messages about no calendar, such as commands, pass).",
    )
    template_id: int | None = Field(
        None, ge=1, le=2**63 - 1, description="A webhook template (templates plugin) that renders the body."
    )
    enabled: bool = True
    secret: Secret | None = Field(None, description="The signing secret; generated when omitted.")


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url | None = Field(None, json_schema_extra={"nullable": False})
    description: str | None = Field(None, max_length=500, pattern=r"^[^\x00]*$", json_schema_extra={"nullable": False})
    event_types: list[TypeFilter] | None = Field(
        None, min_length=1, max_length=100, json_schema_extra={"nullable": False}
    )
    calendars: list[CalendarId] | None = Field(None, max_length=100, description="null: no calendar filter.")
    template_id: int | None = Field(None, ge=1, le=2**63 - 1, description="null: the standard payload.")
    enabled: bool | None = Field(
        None, json_schema_extra={"nullable": False}, description="true re-enables after a 410."
    )
    rotate_secret: bool = Field(
        False,
        description="Add a new signing secret; the previous ones keep signing for webhooks.secret_overlap_seconds.",
    )


class WebhookSecretOut(BaseModel):
    prefix: str = Field(description="The first characters of the secret, to tell secrets apart.")
    created_at: datetime
    expires_at: datetime | None = Field(description="When it stops signing (after a rotation); null: active.")


class WebhookOut(BaseModel):
    id: int
    url: str
    description: str
    event_types: list[str]
    calendars: list[str] | None
    template_id: int | None
    enabled: bool
    disabled_reason: str | None
    secrets: list[WebhookSecretOut]
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The newest signing secret, shown only in this answer.")


class WebhookPatched(WebhookOut):
    secret: str | None = Field(None, description="The new signing secret after a rotation (shown only here).")


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None


class WebhookAttemptOut(BaseModel):
    id: int
    delivery_id: int
    webhook_id: str
    event_type: str
    attempt: int
    attempted_at: datetime
    outcome: Literal["delivered", "retry", "failed", "gone"]
    status_code: int | None
    latency_ms: float
    error: str | None
    response_excerpt: str | None


class WebhookAttemptPage(BaseModel):
    items: list[WebhookAttemptOut]
    next_cursor: str | None


class OutboxDeliveryOut(BaseModel):
    id: int
    message_id: int
    webhook_id: str
    event_type: str
    target: str
    endpoint_id: int | None
    status: OutboxDeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    dead_at: datetime | None


class OutboxDeliveryPage(BaseModel):
    items: list[OutboxDeliveryOut]
    next_cursor: str | None


class EventTypeOut(BaseModel):
    name: str
    description: str
    payload_schema: dict[str, Any] = Field(description="The JSON Schema of the message's data")


class EventTypeList(BaseModel):
    items: list[EventTypeOut]


class WebhookTestQueued(BaseModel):
    message_id: int
    webhook_id: str
    event_type: Literal["outbox.test"]


# -- payloads of the event types this plugin declares ---------------------------------------


class OutboxTest(BaseModel):
    """``outbox.test``: sent by POST /api/v1/webhooks/{id}/test."""

    endpoint_id: int
    note: str


class EventChange(BaseModel):
    """``event.created``, ``event.updated``, ``event.deleted``: an event as stored."""

    model_config = ConfigDict(extra="allow")

    id: int
    source: str
    calendar_id: str
    uid: str
    recurrence_id: str = ""
    title: str | None = None
    start: str | None = None
    end: str | None = None
    all_day: bool | None = None
    run_id: int | None = None


class SyncFailed(BaseModel):
    """``sync.failed``: a sync run of a calendar ended in an error."""

    source: str
    calendar_id: str
    run_id: int | None = None
    error: str
