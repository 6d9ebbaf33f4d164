"""Request and response models of the mail API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Status = Literal["queued", "sent", "retrying", "failed"]
Address = Annotated[str, StringConstraints(min_length=1, max_length=320)]


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field("application/octet-stream", min_length=3, max_length=200)
    content: str = Field(description="The file, base64-encoded (line breaks allowed).")


class SendIn(BaseModel):
    """A message: ``template_id`` with ``variables``, or ``subject`` with ``html`` and/or ``text``."""

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
