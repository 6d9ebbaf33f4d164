"""Request and response models of the mail API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, StringConstraints, TypeAdapter, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

Status = Literal["queued", "sent", "retrying", "failed"]
Address = Annotated[str, StringConstraints(min_length=1, max_length=320)]


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field("application/octet-stream", min_length=3, max_length=200)
    content: str = Field(description="The file, base64-encoded (line breaks allowed).")


class _SendFields(BaseModel):
    """What both kinds of message have: recipients, template variables and attachments."""

    model_config = ConfigDict(extra="forbid")
    to: list[Address] = Field(min_length=1, max_length=1000)
    cc: list[Address] = Field(default_factory=list, max_length=1000)
    bcc: list[Address] = Field(default_factory=list, max_length=1000)
    variables: dict[str, Any] = Field(default_factory=dict)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)


class TemplatedSendIn(_SendFields):
    """A message rendered from an email template with ``variables``; no ``subject``, ``html`` or ``text``."""

    template_id: int = Field(ge=1, le=2**63 - 1)
    subject: None = None
    html: None = None
    text: None = None


class DirectSendIn(_SendFields):
    """A message given in full: ``subject`` and a non-empty ``html``, ``text`` or both; no ``template_id``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["html"], "properties": {"html": {"type": "string", "minLength": 1}}},
                {"required": ["text"], "properties": {"text": {"type": "string", "minLength": 1}}},
            ]
        },
    )
    template_id: None = None
    # A header: no line breaks or other control characters (header injection).
    subject: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00-\x1f\x7f]*$")
    html: str | None = None
    text: str | None = None


class SendIn(BaseModel):
    """A message: ``template_id`` with ``variables``, or ``subject`` with ``html`` and/or ``text``.

    The document shows it as exactly one of :class:`TemplatedSendIn` and :class:`DirectSendIn`;
    this model checks the same rule itself so each mistake keeps its own message.
    """

    model_config = ConfigDict(extra="forbid")
    to: list[Address] = Field(min_length=1, max_length=1000)
    cc: list[Address] = Field(default_factory=list, max_length=1000)
    bcc: list[Address] = Field(default_factory=list, max_length=1000)
    template_id: int | None = Field(None, ge=1, le=2**63 - 1)
    variables: dict[str, Any] = Field(default_factory=dict)
    subject: str | None = Field(None, max_length=2000)
    html: str | None = None
    text: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _one_source(self) -> SendIn:
        if self.template_id is not None:
            if self.subject is not None or self.html is not None or self.text is not None:
                raise ValueError("give template_id or subject/html/text, not both")
        else:
            if not self.subject:
                raise ValueError("subject is required without template_id")
            if not (self.html or self.text):
                raise ValueError("give html, text or both (or a template_id)")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        both = handler(TypeAdapter(TemplatedSendIn | DirectSendIn).core_schema)
        return {"title": cls.__name__, "description": (cls.__doc__ or "").split("\n")[0], "oneOf": both["anyOf"]}


class AttachmentOut(BaseModel):
    filename: str
    content_type: str
    size: int


class DeliveryOut(BaseModel):
    id: int
    message_id: str
    status: Status
    from_: str = Field(alias="from")
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    template_id: int | None
    template_name: str | None
    attempts: int
    last_smtp_code: int | None
    last_smtp_text: str | None
    refused_recipients: dict[str, str] | None
    attachments: list[AttachmentOut]
    created_at: datetime
    updated_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None

    model_config = ConfigDict(populate_by_name=True)


class DeliveryDetail(DeliveryOut):
    text: str
    html: str | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None
