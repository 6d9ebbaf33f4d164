"""Request and response models of the mail API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from chronos_mail.addresses import ADDRESS_PATTERN, check_recipient

Status = Literal["queued", "sent", "retrying", "failed"]
Address = Annotated[
    str,
    Field(
        min_length=1,
        max_length=320,
        description="`name@example.com` or `Name <name@example.com>` (ASCII local part and domain, an "
        "internationalised domain in its `xn--` form; local part at most 64 and domain at most 253 characters).",
        json_schema_extra={"pattern": ADDRESS_PATTERN},
    ),
    AfterValidator(check_recipient),
]

# Standard base64 (RFC 4648 alphabet, padded to a multiple of four), with line
# breaks anywhere; checked by ``_base64`` below, which is the same rule as code.
_B64 = "[A-Za-z0-9+/][\\r\\n]*"
BASE64_PATTERN = f"^[\\r\\n]*(?:(?:{_B64}){{4}})*(?:(?:{_B64}){{2}}=[\\r\\n]*=|(?:{_B64}){{3}}=)?[\\r\\n]*$"
_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
# A plain file name: no path separators or control characters, not blank.
FILENAME_PATTERN = r"^[^/\\\x00-\x1f\x7f]*[^\s/\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*$"
# ``type/subtype`` in any case, but not multipart/* or message/* (the message builds those itself).
CONTENT_TYPE_PATTERN = (
    r"^(?!(?:[Mm][Uu][Ll][Tt][Ii][Pp][Aa][Rr][Tt]|[Mm][Ee][Ss][Ss][Aa][Gg][Ee])/)"
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,62}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)


def _base64(value: str) -> str:
    data = value.replace("\r", "").replace("\n", "")
    body = data.rstrip("=")
    pad = len(data) - len(body)
    if len(data) % 4 or pad > 2 or not _B64_ALPHABET.issuperset(body):
        raise ValueError("not valid base64 (the RFC 4648 alphabet, padded to a multiple of 4; line breaks allowed)")
    return value


def _filename(value: str) -> str:
    if not value.strip() or "/" in value or "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("give a plain file name: no path, no control characters, not blank")
    return value


_CONTENT_TYPE_RE = re.compile(CONTENT_TYPE_PATTERN)


def _content_type(value: str) -> str:
    if not _CONTENT_TYPE_RE.match(value):
        raise ValueError("give a MIME type as type/subtype (letters, digits and !#$&^_.+-)")
    if value.lower().split("/")[0] in ("multipart", "message"):
        raise ValueError("multipart/* and message/* cannot be attached; use another type")
    return value


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: Annotated[str, AfterValidator(_filename)] = Field(
        min_length=1,
        max_length=255,
        description="A plain file name, without a path.",
        json_schema_extra={"pattern": FILENAME_PATTERN},
    )
    content_type: Annotated[str, AfterValidator(_content_type)] = Field(
        "application/octet-stream",
        min_length=3,
        max_length=200,
        json_schema_extra={"pattern": CONTENT_TYPE_PATTERN},
        description="`type/subtype` (any case); not `multipart/*` or `message/*`.",
    )
    content: Annotated[str, AfterValidator(_base64)] = Field(
        description="The file, base64-encoded (line breaks allowed); the attachments together at most "
        "`mail.max_attachment_bytes` decoded (413 above).",
        json_schema_extra={"pattern": BASE64_PATTERN},
    )


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
