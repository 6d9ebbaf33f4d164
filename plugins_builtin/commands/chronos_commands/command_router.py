"""HTTP routes of the command queue: list, enqueue, poll, and the worker callbacks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StringConstraints

from chronos.plugin import (
    ChronosError,
    Conflict,
    Context,
    InvalidInput,
    NotFound,
    NotPermitted,
    Principal,
    Problem,
    origin_of,
    setting_maximum,
)

from chronos_commands import command_service
from chronos_commands.api_types import (
    CALLBACK,
    COMMAND_PATTERN,
    MANAGE,
    MAX_ID,
    POLL,
    SYSTEM_PATTERN,
    CommandId,
    CommandName,
    IsoDateTime,
    JsonInt,
    StorableJson,
    SystemId,
    problems,
)
from chronos_commands.command_service import Completion, EnqueueRequest
from chronos_commands.state import queue_of
from chronos_commands.whitelist import MAX_ERROR, STORABLE_PATTERN

LeaseToken = Annotated[str, StringConstraints(min_length=1, max_length=64)]

router = APIRouter()


# -- models ----------------------------------------------------------------------------


class CommandSource(BaseModel):
    source: str | None
    calendar_id: str | None
    uid: str | None
    recurrence_id: str | None
    event_id: int | None
    event_start: datetime | None


class CommandOut(BaseModel):
    """A command in the queue."""

    id: int
    target_system: str
    command: str
    params: dict[str, Any]
    args: list[str]
    status: Literal["pending", "processing", "completed", "failed", "dead", "cancelled", "missed"]
    attempts: int = Field(description="Leases handed out so far.")
    max_attempts: int
    not_before: datetime
    lease_expires_at: datetime | None
    lease_token: str | None = Field(description="Identifies the current lease; send it back with callbacks.")
    result: Any = None
    error: str | None = Field(
        description="Why the command failed, was cancelled or was missed (e.g. 'missed its time by 3 h 12 min"
        " (grace 300 s)')."
    )
    origin: Literal["api", "calendar", "workflow"]
    source: CommandSource | None
    parent_command_id: int | None
    workflow_id: int | None
    workflow_depth: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = Field(description="When the command reached a final status.")


class CommandPage(BaseModel):
    items: list[CommandOut]
    next_cursor: str | None


class LeaseOut(BaseModel):
    items: list[CommandOut]


class EnqueueIn(BaseModel):
    """``POST /api/v1/commands``: the whitelist applies."""

    model_config = ConfigDict(extra="forbid")

    target_system: SystemId
    command: CommandName = Field(description="Upper-cased on input.")
    params: dict[str, Any] = Field(default_factory=dict)
    args: list[Any] = Field(default_factory=list)
    not_before: IsoDateTime | None = Field(None, description="Do not hand out before this time (ISO 8601 with offset).")
    max_attempts: StrictInt | None = Field(None, ge=1, le=100)


TOKEN_DOC = (
    "Required: the `lease_token` the poll returned with this command. A callback whose lease expired "
    "and went to another poller gets 409 `lease-lost`."
)


class ExtendIn(BaseModel):
    """``POST /commands/{id}/extend``: a heartbeat under the caller's lease."""

    model_config = ConfigDict(extra="forbid")

    lease_seconds: StrictInt | None = Field(
        None,
        ge=1,
        le=86_400,
        description="The lease now ends this many seconds from now (at most commands.max_lease_seconds).",
        json_schema_extra=setting_maximum("commands.max_lease_seconds"),
    )
    lease_token: LeaseToken = Field(description=TOKEN_DOC)


class CompleteIn(BaseModel):
    """``POST /commands/{id}/complete``: success under the caller's lease."""

    model_config = ConfigDict(extra="forbid")

    result: StorableJson = Field(
        None, description="Any JSON value (at most 64 KB; finite numbers, storable text, at most 20 levels deep)."
    )
    lease_token: LeaseToken = Field(
        description=TOKEN_DOC + " Repeating a completion (same result) with the token of the lease that "
        "completed the command answers the same 200."
    )


class CompleteItem(CompleteIn):
    id: JsonInt = Field(ge=1, le=MAX_ID, description="The command's id.")
    result: Any = Field(
        None,
        description="Any JSON value; one that ``POST /commands/{id}/complete`` would refuse (over 64 KB, a"
        " number that is not finite, text that cannot be stored, over 20 levels deep) is this item's 422 outcome.",
    )


class CompleteManyIn(BaseModel):
    """``POST /command-completions``: several completions in one request."""

    model_config = ConfigDict(extra="forbid")

    items: list[CompleteItem] = Field(min_length=1, max_length=100)


class CompletionOutcome(BaseModel):
    id: int
    status: int = Field(
        description="What ``POST /commands/{id}/complete`` would have answered: 200, 403, 404, 409 or 422."
    )
    command: CommandOut | None = Field(None, description="The command, when ``status`` is 200.")
    problem: dict[str, Any] | None = Field(None, description="The problem details otherwise (RFC 9457 members).")


class CompleteManyOut(BaseModel):
    items: list[CompletionOutcome] = Field(description="One outcome per item, in the request's order.")


class FailIn(BaseModel):
    """``POST /commands/{id}/fail``: failure under the caller's lease."""

    model_config = ConfigDict(extra="forbid")

    error: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ERROR)] = Field(
        description="Why the command failed (storable text: no control characters but tab and line breaks).",
        json_schema_extra={"pattern": STORABLE_PATTERN},
    )
    retry: StrictBool = False
    retry_after_seconds: StrictFloat | None = Field(None, ge=0, le=7 * 86_400)
    lease_token: LeaseToken = Field(
        description=TOKEN_DOC + " Repeating a report (same error) under the same lease answers the same 200."
    )


class ManualCompleteIn(BaseModel):
    """``POST /commands/{id}/manual-complete``: an operator's completion, without a lease."""

    model_config = ConfigDict(extra="forbid")

    result: StorableJson = Field(
        None, description="Any JSON value (at most 64 KB; finite numbers, storable text, at most 20 levels deep)."
    )


class ManualFailIn(BaseModel):
    """``POST /commands/{id}/manual-fail``: an operator's failure report, without a lease."""

    model_config = ConfigDict(extra="forbid")

    error: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ERROR)] = Field(
        description="Why the command failed (storable text: no control characters but tab and line breaks).",
        json_schema_extra={"pattern": STORABLE_PATTERN},
    )


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(max_length=500)] = "cancelled through the API"


# -- routes ----------------------------------------------------------------------------

#: The answer status of each kind of refusal a batch item can meet (as the single route answers it).
_ITEM_STATUS: dict[type[ChronosError], int] = {NotPermitted: 403, NotFound: 404, Conflict: 409, InvalidInput: 422}


def _outcome(command_id: int, outcome: dict[str, Any] | ChronosError) -> dict[str, Any]:
    if not isinstance(outcome, ChronosError):
        return {"id": command_id, "status": 200, "command": outcome}
    status = next((code for kind, code in _ITEM_STATUS.items() if isinstance(outcome, kind)), 400)
    extra = dict(outcome.extra) | ({"errors": outcome.errors} if outcome.errors is not None else {})
    problem = Problem(status, outcome.detail, type=outcome.type, **extra)
    return {"id": command_id, "status": status, "problem": problem.body()}


@router.get("/commands", response_model=CommandPage, tags=["commands"])
async def list_commands(
    ctx: Context,
    principal: Principal = Depends(MANAGE),
    status: Annotated[
        list[Literal["pending", "processing", "completed", "failed", "dead", "cancelled", "missed"]] | None, Query()
    ] = None,
    system: Annotated[str | None, Query(pattern=SYSTEM_PATTERN)] = None,
    command: Annotated[str | None, Query(pattern=COMMAND_PATTERN)] = None,
    origin: Literal["api", "calendar", "workflow"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Commands, newest first, filtered by status (repeatable), system, command and origin.

    A key bound to systems lists those systems' commands only (403 for ``system`` naming another).
    """
    return await queue_of(ctx).list(
        status=status,
        system=system,
        command=command,
        origin=origin,
        limit=limit,
        cursor=cursor,
        principal=principal,
    )


@router.post(
    "/commands",
    response_model=CommandOut,
    status_code=201,
    tags=["commands"],
    responses={200: {"model": CommandOut, "description": "A replay of an earlier request with this Idempotency-Key"}},
)
async def enqueue(
    body: EnqueueIn,
    ctx: Context,
    request: Request,
    response: Response,
    principal: Principal = Depends(MANAGE),
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="A retry with the same key and body returns the first command (200).",
            # Documented only: the service checks it and answers 400 invalid-idempotency-key.
            json_schema_extra={"minLength": 1, "maxLength": 200, "pattern": r"^[\x21-\x7e]+$"},
        ),
    ] = None,
) -> dict[str, Any]:
    """Enqueue a command directly. A retry with the same ``Idempotency-Key`` returns the first command (200).

    A key bound to systems may enqueue for those systems only (403 otherwise).
    """
    wanted = EnqueueRequest(
        target_system=body.target_system,
        command=body.command,
        params=body.params,
        args=body.args,
        not_before=body.not_before,
        max_attempts=body.max_attempts,
    )
    command, created = await command_service.enqueue(
        queue_of(ctx),
        wanted,
        principal=principal,
        idempotency_key=idempotency_key,
        origin=origin_of(request),
    )
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return command


@router.get("/commands/{system_id}", response_model=LeaseOut, tags=["commands"], responses=problems(404))
async def poll(
    ctx: Context,
    system_id: Annotated[str, Path(pattern=SYSTEM_PATTERN)],
    principal: Principal = Depends(POLL),
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    lease_seconds: Annotated[
        int | None,
        Query(
            ge=1,
            le=86_400,
            description="Lease length in seconds (default commands.default_lease_seconds,"
            " at most commands.max_lease_seconds).",
            json_schema_extra=setting_maximum("commands.max_lease_seconds"),
        ),
    ] = None,
) -> dict[str, Any]:
    """Lease up to ``limit`` due commands of ``system_id`` (oldest first); each comes with a ``lease_token``
    that every callback (extend, complete, fail) must send back.

    A key bound to systems may poll those systems only, whatever its scopes (403 otherwise).
    """
    items = await command_service.poll(
        queue_of(ctx), system_id, limit=limit, lease_seconds=lease_seconds, principal=principal
    )
    return {"items": items}


@router.get(
    "/commands/{system_id}/{command_id:int}", response_model=CommandOut, tags=["commands"], responses=problems(404)
)
async def get_command(
    ctx: Context,
    system_id: Annotated[str, Path(pattern=SYSTEM_PATTERN)],
    command_id: CommandId,
    principal: Principal = Depends(POLL),
) -> dict[str, Any]:
    """One command by id, addressed under its target system (``GET /commands/{system_id}`` is the poll).

    404 when ``system_id`` has no command with that id. A key bound to systems reads those systems'
    commands only, with or without ``commands.manage`` (403 otherwise): a worker can look up a command
    it was handed, e.g. whether it was cancelled, or why it was missed.
    """
    return await queue_of(ctx).get(system_id, command_id, principal=principal)


@router.post(
    "/commands/{command_id}/extend", response_model=CommandOut, tags=["commands"], responses=problems(404, 409)
)
async def extend(
    command_id: CommandId,
    body: ExtendIn,
    ctx: Context,
    principal: Principal = Depends(CALLBACK),
) -> dict[str, Any]:
    """Heartbeat: the lease now ends ``lease_seconds`` from now.

    Send the poll's ``lease_token`` (422 without it); 409 ``lease-lost`` when the lease expired and the
    command went to another poller, 409 ``conflict`` when it is no longer processing.
    """
    return await command_service.extend(
        queue_of(ctx), command_id, lease_seconds=body.lease_seconds, token=body.lease_token, principal=principal
    )


@router.post(
    "/commands/{command_id}/complete", response_model=CommandOut, tags=["commands"], responses=problems(404, 409)
)
async def complete(
    command_id: CommandId,
    body: CompleteIn,
    ctx: Context,
    request: Request,
    principal: Principal = Depends(CALLBACK),
) -> dict[str, Any]:
    """Report success under the caller's lease: send the poll's ``lease_token`` (422 without it).

    The same call again (same result, same token) answers the same 200; another result, or a token
    other than the one of the lease that completed the command, 409. A callback after the lease
    expired and the command went to another poller gets 409 ``lease-lost``.
    """
    return await command_service.complete(
        queue_of(ctx), command_id, body.result, token=body.lease_token, principal=principal, origin=origin_of(request)
    )


@router.post("/command-completions", response_model=CompleteManyOut, tags=["commands"])
async def complete_many(
    body: CompleteManyIn,
    ctx: Context,
    request: Request,
    principal: Principal = Depends(CALLBACK),
) -> dict[str, Any]:
    """Report several successes at once (up to 100), each under its own lease.

    Every item is decided exactly as ``POST /commands/{id}/complete`` would decide it, in the
    request's order, and all are committed together. The answer is 200 with one outcome per item:
    a refused item (wrong system, lost lease, unknown id, invalid result) does not hold up the
    others. A worker that leases a batch acknowledges it with one request instead of one per command.
    """
    items = [Completion(item.id, item.result, item.lease_token) for item in body.items]
    outcomes = await command_service.complete_many(queue_of(ctx), items, principal=principal, origin=origin_of(request))
    return {"items": [_outcome(item.id, outcome) for item, outcome in zip(body.items, outcomes, strict=True)]}


@router.post("/commands/{command_id}/fail", response_model=CommandOut, tags=["commands"], responses=problems(404, 409))
async def fail(
    command_id: CommandId,
    body: FailIn,
    ctx: Context,
    request: Request,
    principal: Principal = Depends(CALLBACK),
) -> dict[str, Any]:
    """Report failure; ``retry`` queues it again after a backoff until ``max_attempts``, then it is dead.

    Send the poll's ``lease_token`` (422 without it); the same report again under the same lease answers
    the same 200, a callback after the lease went to another poller 409 ``lease-lost``.
    """
    return await command_service.fail(
        queue_of(ctx),
        command_id,
        body.error,
        retry=body.retry,
        retry_after_seconds=body.retry_after_seconds,
        token=body.lease_token,
        principal=principal,
        origin=origin_of(request),
    )


@router.post("/commands/{command_id}/retry", response_model=CommandOut, tags=["commands"], responses=problems(404, 409))
async def retry(
    command_id: CommandId,
    ctx: Context,
    request: Request,
    principal: Principal = Depends(MANAGE),
) -> dict[str, Any]:
    """Put a dead, failed or missed command back in the queue, due now (attempts start again at 0)."""
    return await queue_of(ctx).retry(command_id, principal=principal, origin=origin_of(request))


@router.post(
    "/commands/{command_id}/cancel", response_model=CommandOut, tags=["commands"], responses=problems(404, 409)
)
async def cancel(
    command_id: CommandId,
    ctx: Context,
    request: Request,
    principal: Principal = Depends(MANAGE),
    body: Annotated[CancelIn | None, Body()] = None,
) -> dict[str, Any]:
    """Cancel a pending or processing command."""
    body = body or CancelIn()
    return await queue_of(ctx).cancel(command_id, reason=body.reason, principal=principal, origin=origin_of(request))


@router.post(
    "/commands/{command_id}/manual-complete",
    response_model=CommandOut,
    tags=["commands"],
    responses=problems(404, 409),
)
async def manual_complete(
    command_id: CommandId,
    body: ManualCompleteIn,
    ctx: Context,
    request: Request,
    principal: Principal = Depends(MANAGE),
) -> dict[str, Any]:
    """An operator marks a pending or processing command completed, without a lease token.

    Audited as ``manual_complete``; a worker holding the lease gets 409 on its later callback.
    A command in any other status is a 409.
    """
    return await command_service.resolve_manually(
        queue_of(ctx), command_id, "completed", result=body.result, principal=principal, origin=origin_of(request)
    )


@router.post(
    "/commands/{command_id}/manual-fail", response_model=CommandOut, tags=["commands"], responses=problems(404, 409)
)
async def manual_fail(
    command_id: CommandId,
    body: ManualFailIn,
    ctx: Context,
    request: Request,
    principal: Principal = Depends(MANAGE),
) -> dict[str, Any]:
    """An operator marks a pending or processing command failed (final), without a lease token.

    Audited as ``manual_fail``; a worker holding the lease gets 409 on its later callback; ``retry``
    queues it again. A command in any other status is a 409.
    """
    return await command_service.resolve_manually(
        queue_of(ctx), command_id, "failed", error=body.error, principal=principal, origin=origin_of(request)
    )
