"""HTTP routes of the whitelist: which commands each system accepts, with which params."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)
from typing_extensions import TypeAliasType

from chronos.plugin import Context, Principal, origin_of, refuse_null

from chronos_commands import whitelist_service
from chronos_commands.api_types import ADMIN, SYSTEM_PATTERN, CommandName, EntryId, SystemId, integral, problems
from chronos_commands.settings import GRACE_MAX
from chronos_commands.state import queue_of
from chronos_commands.syntax import PARAM_KEY_RE
from chronos_commands.whitelist import MAX_ENUM, MAX_PARAM_VALUE, MAX_PARAMS, MAX_PATTERN, STORABLE_PATTERN

router = APIRouter()
OriginName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200, "pattern": STORABLE_PATTERN}),
]
SOURCES_DOC = "Calendar sources (ics, local …) whose ACTION: entries may create these commands; null: any."
MaxAttempts = Annotated[StrictInt, Field(ge=1, le=100), BeforeValidator(integral)]
GraceSeconds = Annotated[
    StrictInt,
    Field(
        ge=0,
        le=GRACE_MAX,
        description="How late after its not_before a command may still be handed out; a later one is not run but"
        " becomes 'missed' (its error says by how much, an audit row records it). null: no limit.",
    ),
    BeforeValidator(integral),
]
CALENDARS_DOC = "Calendar ids whose ACTION: entries may create these commands; null: any."

_REGEX = {
    "type": "string",
    "maxLength": MAX_PATTERN,
    "pattern": STORABLE_PATTERN,
    "description": "An RE2 regex the whole value must match (no back-references, lookaround or conditionals).",
}
_ENUM = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_ENUM,
    "items": {
        "anyOf": [
            {"type": "string", "maxLength": MAX_PARAM_VALUE, "pattern": STORABLE_PATTERN},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
        ]
    },
    "description": "The values allowed (a non-string param is compared as its JSON text).",
}
#: ``allowed_params_json`` as the document describes it; ``whitelist.normalize_params_spec`` checks it
#: (the shape again, and that each regex compiles with RE2).
ParamSpecs = TypeAliasType(
    "ParamSpecs",
    Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": MAX_PARAMS,
                "propertyNames": {"pattern": PARAM_KEY_RE.pattern},
                "additionalProperties": {
                    "oneOf": [
                        {"type": "null", "description": "Any value."},
                        _REGEX,
                        _ENUM,
                        {
                            "type": "object",
                            "properties": {"regex": _REGEX},
                            "required": ["regex"],
                            "additionalProperties": False,
                        },
                        {
                            "type": "object",
                            "properties": {"enum": _ENUM},
                            "required": ["enum"],
                            "additionalProperties": False,
                        },
                    ]
                },
                "description": "param -> null (any value), a regex string, a list (enum), {regex: ...} or"
                " {enum: [...]}; answers give the canonical forms null, {regex: ...} and {enum: [...]}.",
            }
        ),
    ],
)


class WhitelistIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: SystemId
    action: CommandName = Field(description="Upper-cased on input.")
    allowed_params_json: ParamSpecs = Field(default_factory=dict)
    enabled: StrictBool = True
    schedule: Literal["now", "event_start"] = "now"
    max_attempts: MaxAttempts | None = None
    grace_seconds: GraceSeconds | None = None
    description: Annotated[str, StringConstraints(max_length=500)] = ""
    sources: list[OriginName] | None = Field(None, max_length=100, description=SOURCES_DOC)
    calendars: list[OriginName] | None = Field(None, max_length=100, description=CALENDARS_DOC)


class WhitelistPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra=refuse_null("allowed_params_json", "enabled", "schedule", "description")
    )

    allowed_params_json: ParamSpecs | None = None
    enabled: StrictBool | None = None
    schedule: Literal["now", "event_start"] | None = None
    max_attempts: MaxAttempts | None = None
    grace_seconds: GraceSeconds | None = None
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    sources: list[OriginName] | None = Field(None, max_length=100, description=SOURCES_DOC)
    calendars: list[OriginName] | None = Field(None, max_length=100, description=CALENDARS_DOC)


class WhitelistOut(BaseModel):
    id: int
    system: str
    action: str
    allowed_params_json: ParamSpecs
    enabled: bool
    schedule: str
    max_attempts: int | None
    grace_seconds: int | None
    description: str
    sources: list[str] | None
    calendars: list[str] | None
    origin: str
    created_at: datetime
    updated_at: datetime


class WhitelistPage(BaseModel):
    items: list[WhitelistOut]
    next_cursor: str | None


@router.get("/whitelists", response_model=WhitelistPage, tags=["whitelists"])
async def list_whitelists(
    ctx: Context,
    _: Principal = Depends(ADMIN),
    system: Annotated[str | None, Query(pattern=SYSTEM_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    return await whitelist_service.list_entries(ctx, system=system, limit=limit, cursor=cursor)


@router.post("/whitelists", response_model=WhitelistOut, status_code=201, tags=["whitelists"], responses=problems(409))
async def create_whitelist(
    body: WhitelistIn,
    ctx: Context,
    request: Request,
    principal: Principal = Depends(ADMIN),
) -> dict[str, Any]:
    rules = body.model_dump(include=set(whitelist_service.RULE_FIELDS))
    return await whitelist_service.create_entry(
        queue_of(ctx), body.system, body.action, rules, principal=principal, origin=origin_of(request)
    )


@router.get("/whitelists/{entry_id}", response_model=WhitelistOut, tags=["whitelists"], responses=problems(404))
async def get_whitelist(entry_id: EntryId, ctx: Context, _: Principal = Depends(ADMIN)) -> dict[str, Any]:
    return await whitelist_service.get_entry(ctx, entry_id)


@router.patch("/whitelists/{entry_id}", response_model=WhitelistOut, tags=["whitelists"], responses=problems(404))
async def patch_whitelist(
    entry_id: EntryId, body: WhitelistPatch, ctx: Context, request: Request, principal: Principal = Depends(ADMIN)
) -> dict[str, Any]:
    """Change an entry. New ``allowed_params_json`` applies to queued commands as well: pending commands
    of this (system, action) that the new rules refuse are cancelled in the same transaction, each with
    the reason as its ``error`` and an audit row. ``enabled: false`` holds pending commands instead
    (nothing is handed out until the entry is enabled again). A new ``grace_seconds`` applies to pending
    commands too: it is checked whenever a command is about to be handed out."""
    return await whitelist_service.update_entry(
        queue_of(ctx), entry_id, body.model_dump(exclude_unset=True), principal=principal, origin=origin_of(request)
    )


@router.delete("/whitelists/{entry_id}", status_code=204, tags=["whitelists"], responses=problems(404))
async def delete_whitelist(
    entry_id: EntryId, ctx: Context, request: Request, principal: Principal = Depends(ADMIN)
) -> Response:
    """Delete an entry. Like disabling it, this holds its pending commands: none is handed out, and an
    entry created again for the same (system, action) re-checks them against its rules."""
    await whitelist_service.delete_entry(ctx, entry_id, principal=principal, origin=origin_of(request))
    return Response(status_code=204)
