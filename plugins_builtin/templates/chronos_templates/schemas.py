"""Request and response models of the templates API."""

from __future__ import annotations

import json
import re
from datetime import date as Date, datetime
from enum import Enum
from functools import cache
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    TypeAdapter,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from chronos.plugin import CanonicalEvent, refuse_null

TemplateType = Literal["email", "webhook", "event"]

_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True, pattern=_NO_CONTROL)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True, pattern=_NO_CONTROL)]
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
TIME_OF_DAY_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# A header value template: no line break.
_ONE_LINE = r"^[^\r\n]*$"


@cache
def timezone_names() -> frozenset[str]:
    """The IANA zone names this server knows (the document lists them as an enum)."""
    return frozenset(available_timezones())


#: OpenAPI shows a time zone as an enum of :func:`timezone_names`
#: (documentation only: ``_check_timezone`` validates, with its own message).
TimeZone = Enum("TimeZone", {name: name for name in sorted(timezone_names())}, type=str)  # type: ignore[misc]


def _iso_text(value: Any) -> Any:
    """Times and dates come as ISO 8601 text; a bare number is not read as a Unix time."""
    if isinstance(value, (int, float)):
        raise ValueError("give an ISO 8601 string")
    return value


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        if value not in timezone_names():  # exactly the document's enum
            raise ValueError(value)
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
    return value


class DocumentedAs:
    """Field metadata: OpenAPI shows ``shape``'s schema for a field whose value is
    checked elsewhere (the template service checks ``content`` against its type,
    so it can report every problem of a template in one answer)."""

    def __init__(self, shape: Any) -> None:
        self.shape = shape

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(TypeAdapter(self.shape).core_schema)


def _by_type(variants: dict[str, type[BaseModel]]) -> Any:
    """A union of ``variants`` discriminated by their ``type`` field."""
    return Annotated[Union[tuple(variants.values())], Field(discriminator="type")]  # noqa: UP007


def _variants(
    suffix: str, base: type[BaseModel], part: str, shapes: dict[str, type[BaseModel]], prefix: bool = True
) -> dict[str, type[BaseModel]]:
    """One model per template type: ``base`` plus ``type`` and the type's ``part`` (documentation only)."""
    return {
        t: create_model(  # type: ignore[call-overload]
            f"{t.capitalize()}{suffix}",
            __base__=base,
            __module__=__name__,
            type=(Literal[t], ...),
            **{part: (shape, ...)},
        )
        for t, shape in shapes.items()
    }


def _partial(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with every field optional and nullable: a ``PATCH`` of its keys (documentation only)."""
    fields: dict[str, Any] = {
        name: (
            f.annotation | None,  # type: ignore[operator]
            Field(None, description=f.description, json_schema_extra=f.json_schema_extra),
        )
        for name, f in model.model_fields.items()
    }
    return create_model(  # type: ignore[call-overload]
        f"{model.__name__}Patch",
        __config__=ConfigDict(extra="forbid"),
        __module__=__name__,
        __doc__=f"Keys of {model.__name__} to change; null removes a key.",
        **fields,
    )


def _union_schema(
    cls: type[BaseModel], variants: dict[str, type[BaseModel]], handler: GetJsonSchemaHandler
) -> JsonSchemaValue:
    schema = dict(handler(TypeAdapter(_by_type(variants)).core_schema))
    schema["title"] = cls.__name__
    if cls.__doc__:
        schema["description"] = cls.__doc__.strip()
    return schema


def _non_empty(key: str) -> dict[str, Any]:
    """A schema requiring ``key`` to be a non-empty string."""
    return {"required": [key], "properties": {key: {"type": "string", "minLength": 1}}}


class EmailContent(BaseModel):
    """An email: ``subject`` and at least one of ``html`` and ``text`` (all Jinja2).

    Only ``html`` is autoescaped. Without ``text`` the mail plugin derives the
    plain-text part from the rendered HTML.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [_non_empty("html"), _non_empty("text")]})
    subject: str = Field(min_length=1, max_length=2000)
    html: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _one_body(self) -> EmailContent:
        if not (self.html or self.text):
            raise ValueError("give html, text or both")
        return self


class WebhookContent(BaseModel):
    """A webhook call: ``body`` renders to JSON (use ``|tojson`` for values);
    ``url`` and header values are templates too."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"] = "POST"
    url: str | None = Field(None, max_length=4000)
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=50,
        json_schema_extra={
            "propertyNames": {"pattern": HEADER_NAME_RE.pattern},
            "additionalProperties": {"type": "string", "pattern": _ONE_LINE},
        },
    )
    body: str = Field("{}", max_length=1_000_000)

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, template in value.items():
            if not HEADER_NAME_RE.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if "\r" in template or "\n" in template:
                raise ValueError(f"header {name!r} contains a line break")
        return value


class EventContent(BaseModel):
    """A calendar entry: ``title``, ``description``, ``tags`` and ``subtasks``
    are templates; the rest are defaults for ``POST /templates/{id}/use``."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=2000)
    description: str = Field("", max_length=100_000)
    duration_minutes: int = Field(60, ge=1, le=60 * 24 * 14)
    time_of_day: str | None = Field(
        None, description="Default start time, HH:MM (24h).", json_schema_extra={"pattern": TIME_OF_DAY_RE.pattern}
    )
    timezone: Annotated[str, DocumentedAs(TimeZone)] | None = Field(
        None, description="IANA zone of time_of_day (default UTC)."
    )
    calendar: str | None = Field(None, min_length=1, max_length=200)
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=50
    )
    subtasks: list[Annotated[str, StringConstraints(min_length=1, max_length=2000)]] = Field(
        default_factory=list, max_length=100
    )

    @field_validator("time_of_day")
    @classmethod
    def _hhmm(cls, value: str | None) -> str | None:
        if value is not None and not TIME_OF_DAY_RE.fullmatch(value):
            raise ValueError("use HH:MM, 00:00 to 23:59")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return _check_timezone(value)


CONTENT_MODELS: dict[str, type[BaseModel]] = {"email": EmailContent, "webhook": WebhookContent, "event": EventContent}
CONTENT_PATCHES: dict[str, type[BaseModel]] = {t: _partial(m) for t, m in CONTENT_MODELS.items()}


class EmailOutput(BaseModel):
    """A rendered email template."""

    subject: str
    html: str | None
    text: str | None


class WebhookOutput(BaseModel):
    """A rendered webhook template; ``body`` is the parsed JSON."""

    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"]
    url: str | None
    headers: dict[str, str]
    body: Any


class EventOutput(BaseModel):
    """A rendered event template: the event's fields and its defaults."""

    title: str
    description: str
    duration_minutes: int
    time_of_day: str | None
    timezone: str | None
    calendar: str | None
    tags: list[str]
    subtasks: list[str]


OUTPUT_MODELS: dict[str, type[BaseModel]] = {"email": EmailOutput, "webhook": WebhookOutput, "event": EventOutput}
AnyOutput = Union[EmailOutput, WebhookOutput, EventOutput]  # noqa: UP007


class CreatedEvent(CanonicalEvent):
    """The event created by using an event template."""

    id: int
    created_at: datetime
    updated_at: datetime


def template_parts(type_: str, content: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """The Jinja2 sources of a template, by JSON pointer-ish part name, with their autoescape flag."""
    parts: dict[str, tuple[str, bool]] = {}
    if type_ == "email":
        parts["subject"] = (content["subject"], False)
        if content.get("html"):
            parts["html"] = (content["html"], True)
        if content.get("text"):
            parts["text"] = (content["text"], False)
    elif type_ == "webhook":
        if content.get("url"):
            parts["url"] = (content["url"], False)
        for name, value in content.get("headers", {}).items():
            parts[f"headers/{name}"] = (value, False)
        parts["body"] = (content.get("body") or "{}", False)
    elif type_ == "event":
        parts["title"] = (content["title"], False)
        if content.get("description"):
            parts["description"] = (content["description"], False)
        for i, tag in enumerate(content.get("tags", [])):
            parts[f"tags/{i}"] = (tag, False)
        for i, task in enumerate(content.get("subtasks", [])):
            parts[f"subtasks/{i}"] = (task, False)
    return parts


CONTENT_DESCRIPTION = "The type's parts: see EmailContent, WebhookContent, EventContent."
VARIABLES_JSON_DESCRIPTION = "JSON Schema of the variables; {} accepts anything."


class _TemplateFields(BaseModel):
    """The fields every template type shares, as written by a client."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    description: str = Field("", max_length=5000)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    variables_json: dict[str, Any] = Field(default_factory=dict, description=VARIABLES_JSON_DESCRIPTION)


TEMPLATE_IN_VARIANTS = _variants("TemplateIn", _TemplateFields, "content", CONTENT_MODELS)


class TemplateIn(BaseModel):
    """A template as created (POST) or replaced (PUT); ``content`` holds the parts of its ``type``."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    type: TemplateType
    description: str = Field("", max_length=5000)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    variables_json: dict[str, Any] = Field(default_factory=dict, description=VARIABLES_JSON_DESCRIPTION)
    content: dict[str, Any] = Field(description=CONTENT_DESCRIPTION)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return _union_schema(cls, TEMPLATE_IN_VARIANTS, handler)


class TemplatePatch(BaseModel):
    """A partial change. ``content`` keys are merged into the stored content
    (a key set to null is removed); changing ``type`` requires a full ``content``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=refuse_null("name", "type", "description", "tags", "variables_json", "content"),
    )
    name: Name | None = None
    type: TemplateType | None = None
    description: str | None = Field(None, max_length=5000)
    tags: list[Tag] | None = Field(None, max_length=50)
    variables_json: dict[str, Any] | None = None
    content: Annotated[
        dict[str, Any] | None,
        DocumentedAs(Union[tuple(CONTENT_PATCHES.values())] | None),  # noqa: UP007
        Field(description="Keys to change in the content of the template's (new) type; null removes a key."),
    ] = None


class _StoredFields(BaseModel):
    id: int
    name: str
    description: str
    tags: list[str]
    variables_json: dict[str, Any]
    usage_count: int
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime


TEMPLATE_OUT_VARIANTS = _variants("TemplateOut", _StoredFields, "content", CONTENT_MODELS)


class TemplateOut(BaseModel):
    """A stored template; ``content`` holds the parts of its ``type``."""

    id: int
    name: str
    type: TemplateType
    description: str
    tags: list[str]
    variables_json: dict[str, Any]
    content: dict[str, Any]
    usage_count: int
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return _union_schema(cls, TEMPLATE_OUT_VARIANTS, handler)


class TemplatePage(BaseModel):
    items: list[TemplateOut]
    next_cursor: str | None


class RenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variables: dict[str, Any] = Field(default_factory=dict)


class _RenderFields(BaseModel):
    template_id: int


RENDER_OUT_VARIANTS = _variants("RenderOut", _RenderFields, "output", OUTPUT_MODELS)


class RenderOut(BaseModel):
    """A preview; ``output`` holds the rendered parts of the template's ``type``."""

    template_id: int
    type: TemplateType
    output: dict[str, Any] = Field(
        description="Rendered parts: subject/html/text, url/headers/body, or the event fields."
    )

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return _union_schema(cls, RENDER_OUT_VARIANTS, handler)


class UseIn(BaseModel):
    """Use a template. For ``event`` templates give ``start`` (with offset) or
    ``date`` (then the template's ``time_of_day`` applies, or it is all-day)."""

    model_config = ConfigDict(extra="forbid")
    variables: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict, description="Free-form, stored with the usage row.")
    start: datetime | None = None
    date: Date | None = None
    timezone: Annotated[str, DocumentedAs(TimeZone)] | None = Field(None, description="An IANA zone name.")
    calendar: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("context")
    @classmethod
    def _small_context(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > 16_384:
            raise ValueError("the context is larger than 16 KB as JSON")
        return value

    @field_validator("start", "date", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> Any:
        return _iso_text(value)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a UTC offset, e.g. 2026-03-01T09:00:00+01:00")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return _check_timezone(value)


class UsageOut(BaseModel):
    id: int
    template_id: int
    key_id: str | None
    used_at: datetime
    context: dict[str, Any]


class UseOut(BaseModel):
    usage: UsageOut
    output: Annotated[
        dict[str, Any], DocumentedAs(AnyOutput), Field(description="The rendered parts, as in RenderOut.")
    ]
    event: Annotated[
        dict[str, Any] | None,
        DocumentedAs(CreatedEvent | None),
        Field(description="The created event (event templates only)."),
    ] = None


class TestSendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: list[Annotated[str, StringConstraints(min_length=3, max_length=320)]] = Field(min_length=1, max_length=10)
    variables: dict[str, Any] = Field(default_factory=dict)

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class TestSendOut(BaseModel):
    delivery_id: int
    status: str
    message_id: str


class VariableInfo(BaseModel):
    name: str
    paths: list[str] = Field(description="Attribute paths the template reads, e.g. user.address.city.")
    used_in: list[str] = Field(description="Template parts that read it.")
    declared: bool = Field(description="The schema lists it under properties.")
    required: bool
    schema_: dict[str, Any] | None = Field(None, alias="schema")

    model_config = ConfigDict(populate_by_name=True)


class VariablesOut(BaseModel):
    template_id: int
    variables: list[VariableInfo]
    undeclared: list[str] = Field(description="Used by the template but absent from the schema.")
    unused: list[str] = Field(description="In the schema but never used by the template.")
    variables_json: dict[str, Any]


EXPORTED_VARIANTS = _variants("ExportedTemplate", _TemplateFields, "content", CONTENT_MODELS)


class ExportedTemplate(BaseModel):
    """One template of an export document; ``content`` holds the parts of its ``type``."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    type: TemplateType
    description: str = Field("", max_length=5000)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    variables_json: dict[str, Any] = Field(default_factory=dict)
    content: dict[str, Any]

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return _union_schema(cls, EXPORTED_VARIANTS, handler)


EXPORT_FORMAT = "chronos.templates"


class ExportDocument(BaseModel):
    """The export/import file: ``{"format": "chronos.templates", "version": 1, "templates": [...]}``."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["chronos.templates"] = EXPORT_FORMAT
    version: Literal[1] = 1
    exported_at: datetime | None = None

    @field_validator("exported_at", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> Any:
        return _iso_text(value)

    templates: list[ExportedTemplate] = Field(max_length=1000)


class ImportResult(BaseModel):
    created: list[str]
    replaced: list[str]
    skipped: list[str]
