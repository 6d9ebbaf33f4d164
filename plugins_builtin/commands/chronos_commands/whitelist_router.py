"""HTTP routes of the whitelist: which commands each system accepts, with which params."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints

from chronos.plugin import Context, Principal, origin_of, refuse_null

from chronos_commands import whitelist_service
from chronos_commands.api_types import ADMIN, SYSTEM_PATTERN, CommandName, EntryId, SystemId, problems
from chronos_commands.state import queue_of

router = APIRouter()
OriginName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
SOURCES_DOC = "Calendar sources (ics, local …) whose ACTION: entries may create these commands; null: any."
CALENDARS_DOC = "Calendar ids whose ACTION: entries may create these commands; null: any."


class WhitelistIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: SystemId
    action: CommandName = Field(description="Upper-cased on input.")
    allowed_params_json: dict[str, Any] = Field(
        default_factory=dict,
        description="param -> null (any value), a regex string, a list (enum), {regex: ...} or {enum: [...]}.",
    )
    enabled: StrictBool = True
    schedule: Literal["now", "event_start"] = "now"
    max_attempts: StrictInt | None = Field(None, ge=1, le=100)
    description: Annotated[str, StringConstraints(max_length=500)] = ""
    sources: list[OriginName] | None = Field(None, max_length=100, description=SOURCES_DOC)
    calendars: list[OriginName] | None = Field(None, max_length=100, description=CALENDARS_DOC)


class WhitelistPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra=refuse_null("allowed_params_json", "enabled", "schedule", "description")
    )

    allowed_params_json: dict[str, Any] | None = None
    enabled: StrictBool | None = None
    schedule: Literal["now", "event_start"] | None = None
    max_attempts: StrictInt | None = Field(None, ge=1, le=100)
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    sources: list[OriginName] | None = Field(None, max_length=100, description=SOURCES_DOC)
    calendars: list[OriginName] | None = Field(None, max_length=100, description=CALENDARS_DOC)


class WhitelistOut(BaseModel):
    id: int
    system: str
    action: str
    allowed_params_json: dict[str, Any]
    enabled: bool
    schedule: str
    max_attempts: int | None
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
    (nothing is handed out until the entry is enabled again)."""
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
