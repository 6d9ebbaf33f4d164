"""The command queue as the API uses it: enqueue, poll, and the checks callbacks need first.

Routes call one function here (or one :class:`CommandQueue` method); refusals are
domain errors, which the HTTP layer turns into problem answers.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from chronos.plugin import (
    ChronosError,
    Conflict,
    InvalidInput,
    MalformedInput,
    NotFound,
    Origin,
    Principal,
    record_audit,
    utcnow,
)

from chronos_commands.outbox_events import publish
from chronos_commands.queue import CommandQueue, NewCommand, Rejected, T, command_view, iso, request_hash
from chronos_commands.whitelist import MAX_RESULT, Violation, check_json_value, encoded_size, refusal, text_problem

IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")


@dataclass
class EnqueueRequest:
    """A command asked for through the API (before the whitelist)."""

    target_system: str
    command: str
    params: dict[str, Any]
    args: list[Any]
    not_before: datetime | None = None
    max_attempts: int | None = None


@dataclass
class Completion:
    """One item of a batch of completions."""

    command_id: int
    result: Any
    token: str


def _check_lease_seconds(queue: CommandQueue, seconds: int | None, pointer: str) -> None:
    limit = queue.settings.max_lease_seconds
    if seconds is not None and seconds > limit:
        raise refusal([Violation(pointer, f"must be at most {limit} (commands.max_lease_seconds)")])


def _check_result(result: Any, pointer: str) -> None:
    violations = check_json_value(result, pointer)
    if not violations and encoded_size(result) > MAX_RESULT:
        violations = [Violation(pointer, f"is larger than {MAX_RESULT} bytes")]
    if violations:
        raise refusal(violations)


def _new_command(req: EnqueueRequest, principal: Principal, idempotency_key: str | None) -> NewCommand:
    if idempotency_key is not None and not IDEMPOTENCY_RE.match(idempotency_key):
        raise MalformedInput("Idempotency-Key must be 1-200 visible ASCII characters", type="invalid-idempotency-key")
    command = req.command.upper()
    fingerprint = request_hash(req.target_system, command, req.params, req.args, iso(req.not_before), req.max_attempts)
    # Without a header every request is a new command; keys are scoped to the API key.
    key = f"api:{principal.key_id}:{idempotency_key}" if idempotency_key else f"api:auto:{uuid.uuid4().hex}"
    return NewCommand(
        target_system=req.target_system,
        command=command,
        params=req.params,
        args=req.args,
        idempotency_key=key,
        origin="api",
        not_before=req.not_before,
        max_attempts=req.max_attempts,
        request_hash=fingerprint,
        created_by=principal.key_id,
    )


async def _insert_once(
    queue: CommandQueue,
    new: NewCommand,
    principal: Principal,
    origin: Origin | None,
) -> tuple[Any, bool]:
    for attempt in range(2):
        try:
            async with queue.ctx.db.write() as s:
                return await queue.insert(s, new, principal=principal, origin=origin)
        except Rejected as exc:
            raise exc.error() from None
        except IntegrityError:
            # A concurrent request with the same key won the insert: answer as its replay.
            if attempt:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def enqueue(
    queue: CommandQueue,
    req: EnqueueRequest,
    *,
    principal: Principal,
    idempotency_key: str | None,
    origin: Origin | None,
) -> tuple[dict[str, Any], bool]:
    """Enqueue a command under the whitelist: (command, created). A retry with the same
    ``idempotency_key`` (and the same request) returns the first command, not created."""
    queue.authorize_system(principal, req.target_system)
    new = _new_command(req, principal, idempotency_key)
    row, created = await _insert_once(queue, new, principal, origin)
    if not created and row["request_hash"] != new.request_hash:
        raise InvalidInput(
            "This Idempotency-Key was already used with a different request",
            type="idempotency-key-reused",
            command_id=row["id"],
        )
    return command_view(row), created


async def poll(
    queue: CommandQueue,
    system: str,
    *,
    limit: int,
    lease_seconds: int | None,
    principal: Principal,
) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due commands of ``system``; an unknown system is not found."""
    _check_lease_seconds(queue, lease_seconds, "/query/lease_seconds")
    items = await queue.lease(system, limit=limit, lease_seconds=lease_seconds, principal=principal)
    if not items and not await queue.system_known(system):
        raise NotFound(f"Unknown system {system!r}: no whitelist entry or command names it", type="unknown-system")
    return items


async def extend(
    queue: CommandQueue,
    command_id: int,
    *,
    lease_seconds: int | None,
    token: str,
    principal: Principal,
) -> dict[str, Any]:
    """Heartbeat: the lease now ends ``lease_seconds`` from now."""
    _check_lease_seconds(queue, lease_seconds, "/lease_seconds")
    return await queue.extend(command_id, lease_seconds=lease_seconds, token=token, principal=principal)


async def complete(
    queue: CommandQueue,
    command_id: int,
    result: Any,
    *,
    token: str,
    principal: Principal,
    origin: Origin | None,
) -> dict[str, Any]:
    """Report success under the caller's lease (the result checked first)."""
    _check_result(result, "/result")
    return await queue.complete(command_id, result, token=token, principal=principal, origin=origin)


async def complete_many(
    queue: CommandQueue,
    items: list[Completion],
    *,
    principal: Principal,
    origin: Origin | None,
) -> list[dict[str, Any] | ChronosError]:
    """Each item decided as :func:`complete` decides it: the command, or the refusal, per item in order."""

    async def one(i: int, item: Completion) -> dict[str, Any] | ChronosError:
        try:
            _check_result(item.result, f"/items/{i}/result")
            return await queue.complete(
                item.command_id, item.result, token=item.token, principal=principal, origin=origin
            )
        except ChronosError as refused:
            return refused

    # Started together, the completions join one group commit.
    return list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))


async def fail(
    queue: CommandQueue,
    command_id: int,
    error: str,
    *,
    retry: bool,
    retry_after_seconds: float | None,
    token: str,
    principal: Principal,
    origin: Origin | None,
) -> dict[str, Any]:
    """Report failure under the caller's lease (the error text checked first)."""
    why = text_problem(error)
    if why:
        raise refusal([Violation("/error", why)])
    return await queue.fail(
        command_id,
        error,
        retry=retry,
        retry_after_seconds=retry_after_seconds,
        token=token,
        principal=principal,
        origin=origin,
    )


async def resolve_manually(
    queue: CommandQueue,
    command_id: int,
    outcome: str,
    *,
    result: Any = None,
    error: str | None = None,
    principal: Principal,
    origin: Origin | None = None,
) -> dict[str, Any]:
    """An operator completes or fails a pending or processing command, without a lease token.

    ``outcome`` is ``"completed"`` or ``"failed"``. The lease, if any, ends with it: the
    token is cleared, so the worker that held it gets 409 on its later callback. The audit
    row says ``manual_complete`` or ``manual_fail`` with ``manual: true``; workflows fire as
    for a worker's report.
    """
    if outcome == "completed":
        _check_result(result, "/result")
    async with queue.ctx.db.write() as s:
        row = await queue._locked(s, command_id)
        queue._authorize(principal, row)
        if row["status"] not in ("pending", "processing"):
            raise Conflict(
                f"Only a pending or processing command can be resolved by hand; command {command_id} is"
                f" {row['status']!r}",
                type="conflict",
                status_now=row["status"],
            )
        now = utcnow()
        values: dict[str, Any] = {
            "status": outcome,
            "completed_at": now,
            "updated_at": now,
            "lease_expires_at": None,
            "lease_token": None,
        }
        values.update({"result_json": result} if outcome == "completed" else {"error": error})
        new = (await s.execute(update(T).where(T.c.id == command_id).values(**values).returning(*T.c))).mappings().one()
        change: dict[str, Any] = {"status": outcome, "previous_status": row["status"], "manual": True}
        if error is not None:
            change["error"] = error[:500]
        await record_audit(
            s,
            entity="command",
            entity_id=command_id,
            action="manual_complete" if outcome == "completed" else "manual_fail",
            change=change,
            principal=principal,
            origin=origin,
        )
        if queue.workflows is not None:
            await queue.workflows.fire(s, new, outcome, principal=principal, origin=origin)
        await publish(queue.ctx, s, [(f"command.{outcome}", new)])
    return command_view(new)
