"""Workflow rules: listing, creating, changing and deleting them (the engine that fires them is
:mod:`chronos_commands.workflows`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    InvalidInput,
    NotFound,
    Origin,
    PluginContext,
    Principal,
    decode_cursor,
    encode_cursor,
    record_audit,
    utcnow,
)

from chronos_commands.audited_rows import update_audited
from chronos_commands.models import WhitelistEntry, Workflow
from chronos_commands.whitelist import Violation, check_json_value, refusal
from chronos_commands.workflows import template_errors, workflow_view

WF = Workflow.__table__
WL = WhitelistEntry.__table__


def _workflow_values(data: dict[str, Any]) -> dict[str, Any]:
    """Column values of the API's fields: ``on`` renamed, commands upper-cased, the template checked."""
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
            errors = [v.as_error() for v in check_json_value(tpl, "/params_template_json")]
        if errors:
            raise InvalidInput(
                f"The request is invalid: {errors[0]['pointer']}: {errors[0]['detail']}",
                type="validation",
                errors=errors,
            )
    return out


async def _workflow_row(s: AsyncSession, workflow_id: int) -> Any:
    row = (await s.execute(select(WF).where(WF.c.id == workflow_id))).mappings().first()
    if row is None:
        raise NotFound(f"No workflow with id {workflow_id}", type="not-found")
    return row


async def _check_action_whitelisted(s: AsyncSession, target: str, command: str) -> None:
    hit = (await s.execute(select(WL.c.id).where(WL.c.system == target, WL.c.action == command))).first()
    if hit is None:
        raise refusal(
            [Violation("/action_command", f"{command!r} on system {target!r} has no whitelist entry")],
            kind="not-whitelisted",
        )


async def list_workflows(ctx: PluginContext, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """Rules by id, keyset-paginated."""
    q = select(WF)
    if cursor:
        (last,) = decode_cursor("workflows", cursor, [int])
        q = q.where(WF.c.id > last)
    async with ctx.db.read() as s:
        rows = (await s.execute(q.order_by(WF.c.id).limit(limit + 1))).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [workflow_view(r) for r in rows],
        "next_cursor": encode_cursor("workflows", [rows[-1]["id"]]) if more else None,
    }


async def create_workflow(
    ctx: PluginContext,
    data: dict[str, Any],
    *,
    principal: Principal,
    origin: Origin | None,
) -> dict[str, Any]:
    """Create a rule; its action must be whitelisted."""
    values = _workflow_values(data)
    now = utcnow()
    async with ctx.db.write() as s:
        await _check_action_whitelisted(s, values["action_target"], values["action_command"])
        inserted = await s.execute(insert(WF).values(**values, created_at=now, updated_at=now).returning(*WF.c))
        row = inserted.mappings().one()
        await record_audit(
            s,
            entity="workflow",
            entity_id=row["id"],
            action="create",
            change=workflow_view(row) | {"created_at": None, "updated_at": None},
            principal=principal,
            origin=origin,
        )
    return workflow_view(row)


async def get_workflow(ctx: PluginContext, workflow_id: int) -> dict[str, Any]:
    async with ctx.db.read() as s:
        return workflow_view(await _workflow_row(s, workflow_id))


async def update_workflow(
    ctx: PluginContext,
    workflow_id: int,
    data: dict[str, Any],
    *,
    principal: Principal,
    origin: Origin | None,
) -> dict[str, Any]:
    """Change a rule (audited per field); a changed action must be whitelisted."""
    for key, value in data.items():
        if value is None and key != "trigger_target":
            raise refusal([Violation(f"/{key}", "may not be null")])
    changes = _workflow_values(data)
    async with ctx.db.write() as s:
        before = await _workflow_row(s, workflow_id)
        if "action_target" in changes or "action_command" in changes:
            target = changes.get("action_target", before["action_target"])
            command = changes.get("action_command", before["action_command"])
            await _check_action_whitelisted(s, target, command)
        row = await update_audited(s, WF, workflow_id, "workflow", before, changes, principal=principal, origin=origin)
    return workflow_view(row)


async def delete_workflow(ctx: PluginContext, workflow_id: int, *, principal: Principal, origin: Origin | None) -> None:
    async with ctx.db.write() as s:
        before = await _workflow_row(s, workflow_id)
        await s.execute(delete(WF).where(WF.c.id == workflow_id))
        await record_audit(
            s,
            entity="workflow",
            entity_id=workflow_id,
            action="delete",
            change={"name": before["name"]},
            principal=principal,
            origin=origin,
        )
