"""HTTP routes: the queue, whitelists, workflows, notes and links."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
)
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from chronos.plugin import Principal, Problem, decode_cursor, encode_cursor, record_audit, require_scope, utcnow, origin_of

from chronos_commands import state
from chronos_commands.models import Link, Note, WhitelistEntry, Workflow
from chronos_commands.queue import CommandQueue, NewCommand, Rejected, command_view, iso, request_hash
from chronos_commands.whitelist import (
    MAX_ERROR,
    MAX_RESULT,
    Violation,
    check_json_value,
    encoded_size,
    normalize_params_spec,
    text_problem,
)
from chronos_commands.workflows import template_errors, workflow_view

SYSTEM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
COMMAND_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
SystemId = Annotated[str, StringConstraints(pattern=SYSTEM_PATTERN)]
CommandName = Annotated[str, StringConstraints(pattern=COMMAND_PATTERN)]
LeaseToken = Annotated[str, StringConstraints(min_length=1, max_length=64)]
IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
MAX_ID = 2**63 - 1
_NUMBER = re.compile(r"^\s*[+-]?\d+(\.\d*)?\s*$")


def _iso_only(value: Any) -> Any:
    # pydantic would read a bare number as a Unix timestamp; the API speaks ISO 8601 only.
    if isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("expected an ISO 8601 date-time with offset, e.g. 2030-03-04T09:00:00+01:00")
    return value


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
CommandId = Annotated[int, Path(ge=1, le=MAX_ID, description="The command's id.")]
EntryId = Annotated[int, Path(ge=1, le=MAX_ID, description="The whitelist entry's id.")]
WorkflowId = Annotated[int, Path(ge=1, le=MAX_ID, description="The workflow's id.")]


class ProblemOut(BaseModel):
    """An RFC 9457 problem (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


_PROBLEM_TEXT = {
    404: "No such resource",
    409: "Conflicts with the resource's state",
    422: "Invalid or refused",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem statuses a route answers besides the app-wide ones."""
    return {code: {"model": ProblemOut, "description": _PROBLEM_TEXT[code]} for code in codes}

MANAGE = require_scope("commands.manage")
POLL = require_scope("commands.manage", or_system="system_id")
CALLBACK = require_scope("commands.manage", or_any_system=True)
ADMIN = require_scope("admin")
READ = require_scope("events.read")

router = APIRouter()


def queue_of(request: Request) -> CommandQueue:
    return state.queue_of(request.app.state.chronos)


def _problem_422(violations: list[Violation], kind: str = "validation") -> Problem:
    first = violations[0]
    return Problem(
        422, f"The request is invalid: {first.pointer}: {first.detail}", type=kind,
        errors=[{**v.as_error(), "type": kind} for v in violations],
    )


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
    status: Literal["pending", "processing", "completed", "failed", "dead", "cancelled"]
    attempts: int = Field(description="Leases handed out so far.")
    max_attempts: int
    not_before: datetime
    lease_expires_at: datetime | None
    lease_token: str | None = Field(description="Identifies the current lease; send it back with callbacks.")
    result: Any = None
    error: str | None
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

    lease_seconds: StrictInt | None = Field(None, ge=1, le=86_400, description="The lease now ends this many seconds from now.")
    lease_token: LeaseToken = Field(description=TOKEN_DOC)


class CompleteIn(BaseModel):
    """``POST /commands/{id}/complete``: success under the caller's lease."""

    model_config = ConfigDict(extra="forbid")

    result: Any = Field(None, description="Any JSON value (at most 64 KB; finite numbers, storable text).")
    lease_token: LeaseToken = Field(
        description=TOKEN_DOC + " Repeating a completion (same result) with the token of the lease that "
        "completed the command answers the same 200."
    )


class CompleteItem(CompleteIn):
    id: StrictInt = Field(ge=1, le=MAX_ID, description="The command's id.")


class CompleteManyIn(BaseModel):
    """``POST /command-completions``: several completions in one request."""

    model_config = ConfigDict(extra="forbid")

    items: list[CompleteItem] = Field(min_length=1, max_length=100)


class CompletionOutcome(BaseModel):
    id: int
    status: int = Field(description="What ``POST /commands/{id}/complete`` would have answered: 200, 403, 404, 409 or 422.")
    command: CommandOut | None = Field(None, description="The command, when ``status`` is 200.")
    problem: dict[str, Any] | None = Field(None, description="The problem details otherwise (RFC 9457 members).")


class CompleteManyOut(BaseModel):
    items: list[CompletionOutcome] = Field(description="One outcome per item, in the request's order.")


class FailIn(BaseModel):
    """``POST /commands/{id}/fail``: failure under the caller's lease."""

    model_config = ConfigDict(extra="forbid")

    error: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ERROR)]
    retry: StrictBool = False
    retry_after_seconds: StrictFloat | None = Field(None, ge=0, le=7 * 86_400)
    lease_token: LeaseToken = Field(
        description=TOKEN_DOC + " Repeating a report (same error) under the same lease answers the same 200."
    )


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(max_length=500)] = "cancelled through the API"


# -- the queue -----------------------------------------------------------------------------


def _check_lease_seconds(queue: CommandQueue, seconds: int | None, pointer: str) -> None:
    if seconds is not None and seconds > queue.settings.max_lease_seconds:
        raise _problem_422([Violation(pointer, f"must be at most {queue.settings.max_lease_seconds} (commands.max_lease_seconds)")])


@router.get("/commands", response_model=CommandPage, tags=["commands"])
async def list_commands(
    request: Request,
    principal: Principal = Depends(MANAGE),
    status: Annotated[list[Literal["pending", "processing", "completed", "failed", "dead", "cancelled"]] | None, Query()] = None,
    system: Annotated[str | None, Query(pattern=SYSTEM_PATTERN)] = None,
    command: Annotated[str | None, Query(pattern=COMMAND_PATTERN)] = None,
    origin: Literal["api", "calendar", "workflow"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Commands, newest first, filtered by status (repeatable), system, command and origin.

    A key bound to systems lists those systems' commands only (403 for ``system`` naming another).
    """
    return await queue_of(request).list(
        status=status, system=system, command=command, origin=origin, limit=limit, cursor=cursor,
        principal=principal,
    )


@router.post("/commands", response_model=CommandOut, status_code=201, tags=["commands"],
             responses={200: {"model": CommandOut, "description": "A replay of an earlier request with this Idempotency-Key"}})
async def enqueue(
    body: EnqueueIn,
    request: Request,
    response: Response,
    principal: Principal = Depends(MANAGE),
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """Enqueue a command directly. A retry with the same ``Idempotency-Key`` returns the first command (200).

    A key bound to systems may enqueue for those systems only (403 otherwise).
    """
    queue = queue_of(request)
    queue.authorize_system(principal, body.target_system)
    if idempotency_key is not None and not IDEMPOTENCY_RE.match(idempotency_key):
        raise Problem(400, "Idempotency-Key must be 1-200 visible ASCII characters", type="invalid-idempotency-key")
    command = body.command.upper()
    fingerprint = request_hash(body.target_system, command, body.params, body.args,
                               iso(body.not_before), body.max_attempts)
    # Without a header every request is a new command; keys are scoped to the API key.
    key = f"api:{principal.key_id}:{idempotency_key}" if idempotency_key else f"api:auto:{uuid.uuid4().hex}"
    new = NewCommand(
        target_system=body.target_system, command=command, params=body.params, args=body.args,
        idempotency_key=key, origin="api", not_before=body.not_before, max_attempts=body.max_attempts,
        request_hash=fingerprint, created_by=principal.key_id,
    )
    for attempt in range(2):
        try:
            async with queue.ctx.db.write() as s:
                row, created = await queue.insert(s, new, principal=principal, origin=origin_of(request))
            break
        except Rejected as exc:
            raise exc.problem() from None
        except IntegrityError:
            # A concurrent request with the same key won the insert: answer as its replay.
            if attempt:
                raise
    if not created:
        if row["request_hash"] != fingerprint:
            raise Problem(
                422, "This Idempotency-Key was already used with a different request", type="idempotency-key-reused",
                command_id=row["id"],
            )
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return command_view(row)


@router.get("/commands/{system_id}", response_model=LeaseOut, tags=["commands"], responses=problems(404))
async def poll(
    request: Request,
    system_id: Annotated[str, Path(pattern=SYSTEM_PATTERN)],
    principal: Principal = Depends(POLL),
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    lease_seconds: Annotated[int | None, Query(ge=1, le=86_400)] = None,
) -> dict[str, Any]:
    """Lease up to ``limit`` due commands of ``system_id`` (oldest first); each comes with a ``lease_token``
    that every callback (extend, complete, fail) must send back.

    A key bound to systems may poll those systems only, whatever its scopes (403 otherwise).
    """
    queue = queue_of(request)
    _check_lease_seconds(queue, lease_seconds, "/query/lease_seconds")
    items = await queue.lease(system_id, limit=limit, lease_seconds=lease_seconds, principal=principal)
    if not items and not await queue.system_known(system_id):
        raise Problem(
            404, f"Unknown system {system_id!r}: no whitelist entry or command names it", type="unknown-system"
        )
    return {"items": items}


@router.post("/commands/{command_id}/extend", response_model=CommandOut, tags=["commands"], responses=problems(404, 409))
async def extend(
    command_id: CommandId, body: ExtendIn, request: Request, principal: Principal = Depends(CALLBACK),
) -> dict[str, Any]:
    """Heartbeat: the lease now ends ``lease_seconds`` from now.

    Send the poll's ``lease_token`` (422 without it); 409 ``lease-lost`` when the lease expired and the
    command went to another poller, 409 ``conflict`` when it is no longer processing.
    """
    queue = queue_of(request)
    _check_lease_seconds(queue, body.lease_seconds, "/lease_seconds")
    return await queue.extend(command_id, lease_seconds=body.lease_seconds, token=body.lease_token, principal=principal)


@router.post("/commands/{command_id}/complete", response_model=CommandOut, tags=["commands"],
             responses=problems(404, 409))
async def complete(
    command_id: CommandId, body: CompleteIn, request: Request, principal: Principal = Depends(CALLBACK),
) -> dict[str, Any]:
    """Report success under the caller's lease: send the poll's ``lease_token`` (422 without it).

    The same call again (same result, same token) answers the same 200; another result, or a token
    other than the one of the lease that completed the command, 409. A callback after the lease
    expired and the command went to another poller gets 409 ``lease-lost``.
    """
    problems = check_json_value(body.result, "/result")
    if not problems and encoded_size(body.result) > MAX_RESULT:
        problems = [Violation("/result", f"is larger than {MAX_RESULT} bytes")]
    if problems:
        raise _problem_422(problems)
    return await queue_of(request).complete(
        command_id, body.result, token=body.lease_token, principal=principal, origin=origin_of(request)
    )


@router.post("/command-completions", response_model=CompleteManyOut, tags=["commands"])
async def complete_many(body: CompleteManyIn, request: Request, principal: Principal = Depends(CALLBACK)) -> dict[str, Any]:
    """Report several successes at once (up to 100), each under its own lease.

    Every item is decided exactly as ``POST /commands/{id}/complete`` would decide it, in the
    request's order, and all are committed together. The answer is 200 with one outcome per item:
    a refused item (wrong system, lost lease, unknown id, invalid result) does not hold up the
    others. A worker that leases a batch acknowledges it with one request instead of one per command.
    """
    queue = queue_of(request)

    async def one(i: int, item: CompleteItem) -> dict[str, Any]:
        problems = check_json_value(item.result, f"/items/{i}/result")
        if not problems and encoded_size(item.result) > MAX_RESULT:
            problems = [Violation(f"/items/{i}/result", f"is larger than {MAX_RESULT} bytes")]
        try:
            if problems:
                raise _problem_422(problems)
            command = await queue.complete(item.id, item.result, token=item.lease_token, principal=principal,
                                           origin=origin_of(request))
        except Problem as problem:
            return {"id": item.id, "status": problem.status, "problem": problem.body()}
        return {"id": item.id, "status": 200, "command": command}

    # Started together, the completions join one group commit.
    return {"items": await asyncio.gather(*(one(i, item) for i, item in enumerate(body.items)))}


@router.post("/commands/{command_id}/fail", response_model=CommandOut, tags=["commands"], responses=problems(404, 409))
async def fail(command_id: CommandId, body: FailIn, request: Request, principal: Principal = Depends(CALLBACK)) -> dict[str, Any]:
    """Report failure; ``retry`` queues it again after a backoff until ``max_attempts``, then it is dead.

    Send the poll's ``lease_token`` (422 without it); the same report again under the same lease answers
    the same 200, a callback after the lease went to another poller 409 ``lease-lost``.
    """
    why = text_problem(body.error)
    if why:
        raise _problem_422([Violation("/error", why)])
    return await queue_of(request).fail(
        command_id, body.error, retry=body.retry, retry_after_seconds=body.retry_after_seconds,
        token=body.lease_token, principal=principal, origin=origin_of(request),
    )


@router.post("/commands/{command_id}/retry", response_model=CommandOut, tags=["commands"], responses=problems(404, 409))
async def retry(command_id: CommandId, request: Request, principal: Principal = Depends(MANAGE)) -> dict[str, Any]:
    """Put a dead or failed command back in the queue (attempts start again at 0)."""
    return await queue_of(request).retry(command_id, principal=principal, origin=origin_of(request))


@router.post("/commands/{command_id}/cancel", response_model=CommandOut, tags=["commands"], responses=problems(404, 409))
async def cancel(
    command_id: CommandId, request: Request, principal: Principal = Depends(MANAGE),
    body: Annotated[CancelIn | None, Body()] = None,
) -> dict[str, Any]:
    """Cancel a pending or processing command."""
    body = body or CancelIn()
    return await queue_of(request).cancel(command_id, reason=body.reason, principal=principal, origin=origin_of(request))


# -- whitelists ------------------------------------------------------------------------------

WL = WhitelistEntry.__table__


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


class WhitelistPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_params_json: dict[str, Any] | None = None
    enabled: StrictBool | None = None
    schedule: Literal["now", "event_start"] | None = None
    max_attempts: StrictInt | None = Field(None, ge=1, le=100)
    description: Annotated[str, StringConstraints(max_length=500)] | None = None


class WhitelistOut(BaseModel):
    id: int
    system: str
    action: str
    allowed_params_json: dict[str, Any]
    enabled: bool
    schedule: str
    max_attempts: int | None
    description: str
    origin: str
    created_at: datetime
    updated_at: datetime


class WhitelistPage(BaseModel):
    items: list[WhitelistOut]
    next_cursor: str | None


def whitelist_view(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "system": row["system"], "action": row["action"],
        "allowed_params_json": row["allowed_params_json"] or {}, "enabled": row["enabled"],
        "schedule": row["schedule"], "max_attempts": row["max_attempts"], "description": row["description"],
        "origin": row["origin"], "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }


def _params_spec(raw: dict[str, Any]) -> dict[str, Any]:
    try:
        return normalize_params_spec(raw)
    except ValueError as exc:
        name = next((k for k in raw if f"param {k!r}" in str(exc)), None)
        pointer = "/allowed_params_json" + (f"/{name.replace('~', '~0').replace('/', '~1')}" if name else "")
        raise _problem_422([Violation(pointer, str(exc))]) from None


async def _whitelist_row(s: Any, entry_id: int) -> Any:
    row = (await s.execute(select(WL).where(WL.c.id == entry_id))).mappings().first()
    if row is None:
        raise Problem(404, f"No whitelist entry with id {entry_id}", type="not-found")
    return row


@router.get("/whitelists", response_model=WhitelistPage, tags=["whitelists"])
async def list_whitelists(
    request: Request, _: Principal = Depends(ADMIN),
    system: Annotated[str | None, Query(pattern=SYSTEM_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    q = select(WL)
    if system:
        q = q.where(WL.c.system == system)
    if cursor:
        (last,) = decode_cursor("whitelists", cursor, [int])
        q = q.where(WL.c.id > last)
    async with queue_of(request).ctx.db.read() as s:
        rows = (await s.execute(q.order_by(WL.c.id).limit(limit + 1))).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [whitelist_view(r) for r in rows],
            "next_cursor": encode_cursor("whitelists", [rows[-1]["id"]]) if more else None}


@router.post("/whitelists", response_model=WhitelistOut, status_code=201, tags=["whitelists"], responses=problems(409))
async def create_whitelist(body: WhitelistIn, request: Request, principal: Principal = Depends(ADMIN)) -> dict[str, Any]:
    spec = _params_spec(body.allowed_params_json)
    now = utcnow()
    values = dict(system=body.system, action=body.action.upper(), allowed_params_json=spec, enabled=body.enabled,
                  schedule=body.schedule, max_attempts=body.max_attempts, description=body.description,
                  origin="api", created_at=now, updated_at=now)
    try:
        async with queue_of(request).ctx.db.write() as s:
            dup = (await s.execute(select(WL.c.id).where(WL.c.system == values["system"], WL.c.action == values["action"]))).first()
            if dup is not None:
                raise Problem(409, f"{values['system']}/{values['action']} is already whitelisted (entry {dup.id})",
                              type="conflict", existing_id=dup.id)
            row = (await s.execute(insert(WL).values(**values).returning(*WL.c))).mappings().one()
            await record_audit(s, entity="whitelist", entity_id=row["id"], action="create",
                               change={k: values[k] for k in ("system", "action", "allowed_params_json", "enabled", "schedule")},
                               principal=principal, origin=origin_of(request))
            # Commands queued under an entry since deleted wait for a new one: they must pass its rules.
            await queue_of(request).recheck_pending(s, row, principal=principal, origin=origin_of(request))
    except IntegrityError:
        raise Problem(409, f"{values['system']}/{values['action']} is already whitelisted", type="conflict") from None
    return whitelist_view(row)


@router.get("/whitelists/{entry_id}", response_model=WhitelistOut, tags=["whitelists"], responses=problems(404))
async def get_whitelist(entry_id: EntryId, request: Request, _: Principal = Depends(ADMIN)) -> dict[str, Any]:
    async with queue_of(request).ctx.db.read() as s:
        return whitelist_view(await _whitelist_row(s, entry_id))


@router.patch("/whitelists/{entry_id}", response_model=WhitelistOut, tags=["whitelists"], responses=problems(404))
async def patch_whitelist(entry_id: EntryId, body: WhitelistPatch, request: Request,
                          principal: Principal = Depends(ADMIN)) -> dict[str, Any]:
    """Change an entry. New ``allowed_params_json`` applies to queued commands as well: pending commands
    of this (system, action) that the new rules refuse are cancelled in the same transaction, each with
    the reason as its ``error`` and an audit row. ``enabled: false`` holds pending commands instead
    (nothing is handed out until the entry is enabled again)."""
    changes = body.model_dump(exclude_unset=True)
    if "allowed_params_json" in changes:
        if changes["allowed_params_json"] is None:
            raise _problem_422([Violation("/allowed_params_json", "must be an object (use {} to allow no params)")])
        changes["allowed_params_json"] = _params_spec(changes["allowed_params_json"])
    for key in ("enabled", "schedule", "description"):
        if key in changes and changes[key] is None:
            raise _problem_422([Violation(f"/{key}", "may not be null")])
    queue = queue_of(request)
    async with queue.ctx.db.write() as s:
        before = await _whitelist_row(s, entry_id)
        # Decided on the request, not on ``before``: a concurrent change may commit first.
        recheck = "allowed_params_json" in changes
        if recheck:
            await queue.lock_pending(s, before["system"], before["action"])
        row = await _update_audited(s, WL, entry_id, "whitelist", before, changes, principal, request)
        if recheck:
            # After the update: an insert that share-locked the entry has committed by now and is seen.
            await queue.recheck_pending(s, row, principal=principal, origin=origin_of(request))
    return whitelist_view(row)


async def _update_audited(
    s: Any, table: Any, row_id: int, entity: str, before: Any, changes: dict[str, Any], principal: Principal, request: Request
) -> Any:
    """Apply ``changes`` to one row and audit each field's old and new value; no changes, no write."""
    if not changes:
        return before
    changes["updated_at"] = utcnow()
    row = (await s.execute(update(table).where(table.c.id == row_id).values(**changes).returning(*table.c))).mappings().one()
    await record_audit(
        s, entity=entity, entity_id=row_id, action="update",
        change={k: {"from": before[k], "to": v} for k, v in changes.items() if k != "updated_at"},
        principal=principal, origin=origin_of(request),
    )
    return row


@router.delete("/whitelists/{entry_id}", status_code=204, tags=["whitelists"], responses=problems(404))
async def delete_whitelist(entry_id: EntryId, request: Request, principal: Principal = Depends(ADMIN)) -> Response:
    """Delete an entry. Like disabling it, this holds its pending commands: none is handed out, and an
    entry created again for the same (system, action) re-checks them against its rules."""
    async with queue_of(request).ctx.db.write() as s:
        before = await _whitelist_row(s, entry_id)
        await s.execute(delete(WL).where(WL.c.id == entry_id))
        await record_audit(s, entity="whitelist", entity_id=entry_id, action="delete",
                           change={"system": before["system"], "action": before["action"]},
                           principal=principal, origin=origin_of(request))
    return Response(status_code=204)


# -- workflows -------------------------------------------------------------------------------

WF = Workflow.__table__


class WorkflowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    trigger_command: CommandName
    trigger_target: SystemId | None = None
    on: Literal["completed", "failed"]
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
    model_config = ConfigDict(extra="forbid")

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


def _workflow_values(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    if "on" in out:
        out["on_status"] = out.pop("on")
    for key in ("trigger_command", "action_command"):
        if out.get(key):
            out[key] = out[key].upper()
    if "params_template_json" in out:
        tpl = out["params_template_json"]
        errors = template_errors(tpl)
        if not errors:
            problems = check_json_value(tpl, "/params_template_json")
            errors = [v.as_error() for v in problems]
        if errors:
            raise Problem(422, f"The request is invalid: {errors[0]['pointer']}: {errors[0]['detail']}",
                          type="validation", errors=errors)
    return out


async def _workflow_row(s: Any, workflow_id: int) -> Any:
    row = (await s.execute(select(WF).where(WF.c.id == workflow_id))).mappings().first()
    if row is None:
        raise Problem(404, f"No workflow with id {workflow_id}", type="not-found")
    return row


async def _check_action_whitelisted(s: Any, target: str, command: str) -> None:
    hit = (await s.execute(select(WL.c.id).where(WL.c.system == target, WL.c.action == command))).first()
    if hit is None:
        raise _problem_422(
            [Violation("/action_command", f"{command!r} on system {target!r} has no whitelist entry")],
            kind="not-whitelisted",
        )


@router.get("/workflows", response_model=WorkflowPage, tags=["workflows"])
async def list_workflows(
    request: Request, _: Principal = Depends(ADMIN),
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    q = select(WF)
    if cursor:
        (last,) = decode_cursor("workflows", cursor, [int])
        q = q.where(WF.c.id > last)
    async with queue_of(request).ctx.db.read() as s:
        rows = (await s.execute(q.order_by(WF.c.id).limit(limit + 1))).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [workflow_view(r) for r in rows],
            "next_cursor": encode_cursor("workflows", [rows[-1]["id"]]) if more else None}


@router.post("/workflows", response_model=WorkflowOut, status_code=201, tags=["workflows"])
async def create_workflow(body: WorkflowIn, request: Request, principal: Principal = Depends(ADMIN)) -> dict[str, Any]:
    values = _workflow_values(body.model_dump())
    now = utcnow()
    async with queue_of(request).ctx.db.write() as s:
        await _check_action_whitelisted(s, values["action_target"], values["action_command"])
        row = (await s.execute(insert(WF).values(**values, created_at=now, updated_at=now).returning(*WF.c))).mappings().one()
        await record_audit(s, entity="workflow", entity_id=row["id"], action="create",
                           change=workflow_view(row) | {"created_at": None, "updated_at": None},
                           principal=principal, origin=origin_of(request))
    return workflow_view(row)


@router.get("/workflows/{workflow_id}", response_model=WorkflowOut, tags=["workflows"], responses=problems(404))
async def get_workflow(workflow_id: WorkflowId, request: Request, _: Principal = Depends(ADMIN)) -> dict[str, Any]:
    async with queue_of(request).ctx.db.read() as s:
        return workflow_view(await _workflow_row(s, workflow_id))


@router.patch("/workflows/{workflow_id}", response_model=WorkflowOut, tags=["workflows"], responses=problems(404))
async def patch_workflow(workflow_id: WorkflowId, body: WorkflowPatch, request: Request,
                         principal: Principal = Depends(ADMIN)) -> dict[str, Any]:
    data = body.model_dump(exclude_unset=True)
    for key, value in data.items():
        if value is None and key != "trigger_target":
            raise _problem_422([Violation(f"/{key}", "may not be null")])
    changes = _workflow_values(data)
    async with queue_of(request).ctx.db.write() as s:
        before = await _workflow_row(s, workflow_id)
        if "action_target" in changes or "action_command" in changes:
            target = changes.get("action_target", before["action_target"])
            command = changes.get("action_command", before["action_command"])
            await _check_action_whitelisted(s, target, command)
        row = await _update_audited(s, WF, workflow_id, "workflow", before, changes, principal, request)
    return workflow_view(row)


@router.delete("/workflows/{workflow_id}", status_code=204, tags=["workflows"], responses=problems(404))
async def delete_workflow(workflow_id: WorkflowId, request: Request, principal: Principal = Depends(ADMIN)) -> Response:
    async with queue_of(request).ctx.db.write() as s:
        before = await _workflow_row(s, workflow_id)
        await s.execute(delete(WF).where(WF.c.id == workflow_id))
        await record_audit(s, entity="workflow", entity_id=workflow_id, action="delete",
                           change={"name": before["name"]}, principal=principal, origin=origin_of(request))
    return Response(status_code=204)


# -- notes and links ----------------------------------------------------------------------------

NT = Note.__table__
LT = Link.__table__


class SourceRef(BaseModel):
    source: str | None
    calendar_id: str | None
    uid: str | None
    recurrence_id: str | None
    event_id: int | None


class NoteOut(BaseModel):
    id: int
    content: str
    description: str | None
    timestamp: datetime
    calendar_id: str | None
    source: SourceRef
    created_at: datetime


class LinkOut(BaseModel):
    id: int
    url: str
    title: str
    description: str | None
    timestamp: datetime
    calendar_id: str | None
    source: SourceRef
    created_at: datetime


class NotePage(BaseModel):
    items: list[NoteOut]
    next_cursor: str | None


class LinkPage(BaseModel):
    items: list[LinkOut]
    next_cursor: str | None


def _ref(row: Any) -> dict[str, Any]:
    return {"source": row["source"], "calendar_id": row["calendar_id"], "uid": row["source_uid"],
            "recurrence_id": row["recurrence_id"], "event_id": row["event_id"]}


def note_view(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "content": row["content"], "description": row["description"],
            "timestamp": iso(row["timestamp"]), "calendar_id": row["calendar_id"], "source": _ref(row),
            "created_at": iso(row["created_at"])}


def link_view(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "url": row["url"], "title": row["title"], "description": row["description"],
            "timestamp": iso(row["timestamp"]), "calendar_id": row["calendar_id"], "source": _ref(row),
            "created_at": iso(row["created_at"])}


async def _consumed_page(
    request: Request, table: Any, kind: str, view: Any, *, calendar_id: list[str] | None,
    start: datetime | None, end: datetime | None, limit: int, cursor: str | None,
) -> dict[str, Any]:
    if start is not None and end is not None and start > end:
        raise _problem_422([Violation("/query/from", "must not be after 'to'")])
    q = select(table)
    if calendar_id:
        q = q.where(table.c.calendar_id.in_(calendar_id))
    if start is not None:
        q = q.where(table.c.timestamp >= start)
    if end is not None:
        q = q.where(table.c.timestamp < end)
    if cursor:
        ts_text, last_id = decode_cursor(kind, cursor, [str, int])
        try:
            ts = datetime.fromisoformat(ts_text.replace("Z", "+00:00"))
        except ValueError:
            raise Problem(400, "The cursor is invalid or belongs to another query; start again without it",
                          type="invalid-cursor") from None
        if ts.tzinfo is None:
            raise Problem(400, "The cursor is invalid or belongs to another query; start again without it",
                          type="invalid-cursor")
        q = q.where((table.c.timestamp < ts) | ((table.c.timestamp == ts) & (table.c.id < last_id)))
    q = q.order_by(table.c.timestamp.desc(), table.c.id.desc()).limit(limit + 1)
    async with queue_of(request).ctx.db.read() as s:
        rows = (await s.execute(q)).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(kind, [iso(rows[-1]["timestamp"]), rows[-1]["id"]]) if more else None
    return {"items": [view(r) for r in rows], "next_cursor": nxt}


@router.get("/notes", response_model=NotePage, tags=["notes"])
async def list_notes(
    request: Request, _: Principal = Depends(READ),
    calendar_id: Annotated[list[str] | None, Query(max_length=50)] = None,
    start: Annotated[IsoDateTime | None, Query(alias="from")] = None,
    end: Annotated[IsoDateTime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Notes taken from ``NOTIZ:``/``NOTE:`` entries, newest first."""
    return await _consumed_page(request, NT, "notes", note_view, calendar_id=calendar_id, start=start, end=end,
                                limit=limit, cursor=cursor)


@router.get("/links", response_model=LinkPage, tags=["links"])
async def list_links(
    request: Request, _: Principal = Depends(READ),
    calendar_id: Annotated[list[str] | None, Query(max_length=50)] = None,
    start: Annotated[IsoDateTime | None, Query(alias="from")] = None,
    end: Annotated[IsoDateTime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Links taken from ``URL:`` entries, newest first."""
    return await _consumed_page(request, LT, "links", link_view, calendar_id=calendar_id, start=start, end=end,
                                limit=limit, cursor=cursor)

