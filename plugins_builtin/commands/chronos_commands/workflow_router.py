"""HTTP routes of workflow rules: enqueue a follow-up command when a command completes or fails."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints

from chronos.plugin import Context, Principal, origin_of, refuse_null

from chronos_commands import workflow_service
from chronos_commands.api_types import ADMIN, CommandName, SystemId, WorkflowId, problems

router = APIRouter()


class WorkflowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    trigger_command: CommandName
    trigger_target: SystemId | None = None
    on: Literal["completed", "failed"] = Field(
        description="``failed`` fires when the command fails for good: status failed, dead (no attempts left)"
        " or missed (later than its grace, never run); the template's ``status`` tells which."
    )
    action_command: CommandName
    action_target: SystemId
    params_template_json: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON object; every string is a sandboxed Jinja2 template over params, args, result, error, "
        "command, target, id, attempts, status and outcome of the triggering command.",
    )
    delay_seconds: StrictInt = Field(0, ge=0, le=30 * 86_400)
    enabled: StrictBool = True


class WorkflowPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=refuse_null(
            "name",
            "trigger_command",
            "on",
            "action_command",
            "action_target",
            "params_template_json",
            "delay_seconds",
            "enabled",
        ),
    )

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)] | None = None
    trigger_command: CommandName | None = None
    trigger_target: SystemId | None = None
    on: Literal["completed", "failed"] | None = None
    action_command: CommandName | None = None
    action_target: SystemId | None = None
    params_template_json: dict[str, Any] | None = None
    delay_seconds: StrictInt | None = Field(None, ge=0, le=30 * 86_400)
    enabled: StrictBool | None = None


class WorkflowOut(BaseModel):
    id: int
    name: str
    trigger_command: str
    trigger_target: str | None
    on: str
    action_command: str
    action_target: str
    params_template_json: dict[str, Any]
    delay_seconds: int
    enabled: bool
    created_at: datetime
    updated_at: datetime


class WorkflowPage(BaseModel):
    items: list[WorkflowOut]
    next_cursor: str | None


@router.get("/workflows", response_model=WorkflowPage, tags=["workflows"])
async def list_workflows(
    ctx: Context,
    _: Principal = Depends(ADMIN),
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    return await workflow_service.list_workflows(ctx, limit=limit, cursor=cursor)


@router.post("/workflows", response_model=WorkflowOut, status_code=201, tags=["workflows"])
async def create_workflow(
    body: WorkflowIn, ctx: Context, request: Request, principal: Principal = Depends(ADMIN)
) -> dict[str, Any]:
    return await workflow_service.create_workflow(
        ctx, body.model_dump(), principal=principal, origin=origin_of(request)
    )


@router.get("/workflows/{workflow_id}", response_model=WorkflowOut, tags=["workflows"], responses=problems(404))
async def get_workflow(workflow_id: WorkflowId, ctx: Context, _: Principal = Depends(ADMIN)) -> dict[str, Any]:
    return await workflow_service.get_workflow(ctx, workflow_id)


@router.patch("/workflows/{workflow_id}", response_model=WorkflowOut, tags=["workflows"], responses=problems(404))
async def patch_workflow(
    workflow_id: WorkflowId, body: WorkflowPatch, ctx: Context, request: Request, principal: Principal = Depends(ADMIN)
) -> dict[str, Any]:
    return await workflow_service.update_workflow(
        ctx, workflow_id, body.model_dump(exclude_unset=True), principal=principal, origin=origin_of(request)
    )


@router.delete("/workflows/{workflow_id}", status_code=204, tags=["workflows"], responses=problems(404))
async def delete_workflow(
    workflow_id: WorkflowId, ctx: Context, request: Request, principal: Principal = Depends(ADMIN)
) -> Response:
    await workflow_service.delete_workflow(ctx, workflow_id, principal=principal, origin=origin_of(request))
    return Response(status_code=204)
