"""Whitelist entries: listing, creating, changing and deleting them, from the API and from configuration.

Creating an entry and changing its allowed params go through one path
(:func:`add_entry`, :func:`change_entry`) whoever asks: pending commands of the
(system, action) are re-checked against the new rules in the same transaction,
and those the rules refuse are cancelled.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    Conflict,
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
from chronos_commands.models import WhitelistEntry
from chronos_commands.queue import CommandQueue, iso
from chronos_commands.settings import CommandsSettings, WhitelistSeed
from chronos_commands.whitelist import Violation, normalize_origins, normalize_params_spec, refusal

WL = WhitelistEntry.__table__
#: The fields an entry's rules consist of (what configuration sets and the audit records on create).
RULE_FIELDS = (
    "allowed_params_json",
    "enabled",
    "schedule",
    "max_attempts",
    "grace_seconds",
    "description",
    "sources",
    "calendars",
)
#: Changes that re-check the pending commands of the entry.
RECHECKED = ("allowed_params_json", "sources", "calendars")
CONFIG_ACTOR = "system:config"


def entry_view(row: Any) -> dict[str, Any]:
    """The public JSON shape of a whitelist entry."""
    return {
        "id": row["id"],
        "system": row["system"],
        "action": row["action"],
        "allowed_params_json": row["allowed_params_json"] or {},
        "enabled": row["enabled"],
        "schedule": row["schedule"],
        "max_attempts": row["max_attempts"],
        "grace_seconds": row["grace_seconds"],
        "description": row["description"],
        "sources": row["sources"],
        "calendars": row["calendars"],
        "origin": row["origin"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def params_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Canonical ``allowed_params_json``; 422 pointing at the param it cannot accept."""
    try:
        return normalize_params_spec(raw)
    except ValueError as exc:
        name = next((k for k in raw if f"param {k!r}" in str(exc)), None)
        pointer = "/allowed_params_json" + (f"/{name.replace('~', '~0').replace('/', '~1')}" if name else "")
        raise refusal([Violation(pointer, str(exc))]) from None


def origins_spec(rules: dict[str, Any]) -> dict[str, Any]:
    """``rules`` with canonical ``sources``/``calendars`` (when present); 422 pointing at the field."""
    out = dict(rules)
    for key in ("sources", "calendars"):
        if key in out:
            try:
                out[key] = normalize_origins(out[key], key)
            except ValueError as exc:
                raise refusal([Violation(f"/{key}", str(exc))]) from None
    return out


async def _entry_row(s: AsyncSession, entry_id: int) -> Any:
    row = (await s.execute(select(WL).where(WL.c.id == entry_id))).mappings().first()
    if row is None:
        raise NotFound(f"No whitelist entry with id {entry_id}", type="not-found")
    return row


# -- the one path that creates or changes an entry --------------------------------------------


async def add_entry(
    s: AsyncSession,
    queue: CommandQueue,
    system: str,
    action: str,
    rules: dict[str, Any],
    *,
    source: str,
    principal: Principal | None = None,
    origin: Origin | None = None,
    actor: str | None = None,
) -> Any:
    """Insert an entry for (system, action) with ``rules`` (see :data:`RULE_FIELDS`); 409 if one exists.

    ``source`` ("api" or "config") is recorded as the entry's origin. Commands queued under an
    entry since deleted wait for a new one: they are re-checked against its rules.
    """
    dup = (await s.execute(select(WL.c.id).where(WL.c.system == system, WL.c.action == action))).first()
    if dup is not None:
        raise Conflict(
            f"{system}/{action} is already whitelisted (entry {dup.id})", type="conflict", existing_id=dup.id
        )
    now = utcnow()
    row = (
        (
            await s.execute(
                insert(WL)
                .values(system=system, action=action, origin=source, created_at=now, updated_at=now, **rules)
                .returning(*WL.c)
            )
        )
        .mappings()
        .one()
    )
    await record_audit(
        s,
        entity="whitelist",
        entity_id=row["id"],
        action="create",
        change={"system": system, "action": action, **rules},
        principal=principal,
        origin=origin,
        actor=actor,
    )
    await queue.recheck_pending(s, row, principal=principal, origin=origin, actor=actor)
    return row


async def change_entry(
    s: AsyncSession,
    queue: CommandQueue,
    before: Any,
    changes: dict[str, Any],
    *,
    source: str | None = None,
    principal: Principal | None = None,
    origin: Origin | None = None,
    actor: str | None = None,
) -> Any:
    """Apply ``changes`` to the entry ``before`` (audited per field).

    New ``allowed_params_json`` applies to queued commands as well: pending commands the new rules
    refuse are cancelled in this transaction. ``source``, when given, is recorded as the entry's origin.
    """
    # Decided on the request, not on ``before``: a concurrent change may commit first.
    recheck = any(k in changes for k in RECHECKED)
    if recheck:
        await queue.lock_pending(s, before["system"], before["action"])
    row = await update_audited(
        s,
        WL,
        before["id"],
        "whitelist",
        before,
        changes,
        unaudited={"origin": source} if source else None,
        principal=principal,
        origin=origin,
        actor=actor,
    )
    if recheck:
        # After the update: an insert that share-locked the entry has committed by now and is seen.
        await queue.recheck_pending(s, row, principal=principal, origin=origin, actor=actor)
    return row


# -- the API ------------------------------------------------------------------------------------


async def list_entries(ctx: PluginContext, *, system: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
    """Entries by id, keyset-paginated, optionally of one system."""
    q = select(WL)
    if system:
        q = q.where(WL.c.system == system)
    if cursor:
        (last,) = decode_cursor("whitelists", cursor, [int])
        q = q.where(WL.c.id > last)
    async with ctx.db.read() as s:
        rows = (await s.execute(q.order_by(WL.c.id).limit(limit + 1))).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [entry_view(r) for r in rows],
        "next_cursor": encode_cursor("whitelists", [rows[-1]["id"]]) if more else None,
    }


async def get_entry(ctx: PluginContext, entry_id: int) -> dict[str, Any]:
    async with ctx.db.read() as s:
        return entry_view(await _entry_row(s, entry_id))


async def create_entry(
    queue: CommandQueue,
    system: str,
    action: str,
    rules: dict[str, Any],
    *,
    principal: Principal,
    origin: Origin | None,
) -> dict[str, Any]:
    """Create an entry through the API (``action`` upper-cased, params checked); 409 if it exists."""
    action = action.upper()
    rules = origins_spec({**rules, "allowed_params_json": params_spec(rules["allowed_params_json"])})
    try:
        async with queue.ctx.db.write() as s:
            row = await add_entry(s, queue, system, action, rules, source="api", principal=principal, origin=origin)
    except IntegrityError:
        raise Conflict(f"{system}/{action} is already whitelisted", type="conflict") from None
    return entry_view(row)


def _checked_changes(changes: dict[str, Any]) -> dict[str, Any]:
    changes = dict(changes)
    if "allowed_params_json" in changes:
        if changes["allowed_params_json"] is None:
            raise refusal([Violation("/allowed_params_json", "must be an object (use {} to allow no params)")])
        changes["allowed_params_json"] = params_spec(changes["allowed_params_json"])
    changes = origins_spec(changes)
    for key in ("enabled", "schedule", "description"):
        if key in changes and changes[key] is None:
            raise refusal([Violation(f"/{key}", "may not be null")])
    return changes


async def update_entry(
    queue: CommandQueue,
    entry_id: int,
    changes: dict[str, Any],
    *,
    principal: Principal,
    origin: Origin | None,
) -> dict[str, Any]:
    """Change an entry through the API (see :func:`change_entry`)."""
    changes = _checked_changes(changes)
    async with queue.ctx.db.write() as s:
        before = await _entry_row(s, entry_id)
        row = await change_entry(s, queue, before, changes, principal=principal, origin=origin)
    return entry_view(row)


async def delete_entry(ctx: PluginContext, entry_id: int, *, principal: Principal, origin: Origin | None) -> None:
    """Delete an entry; its pending commands wait (none is handed out) for an entry created again."""
    async with ctx.db.write() as s:
        before = await _entry_row(s, entry_id)
        await s.execute(delete(WL).where(WL.c.id == entry_id))
        await record_audit(
            s,
            entity="whitelist",
            entity_id=entry_id,
            action="delete",
            change={"system": before["system"], "action": before["action"]},
            principal=principal,
            origin=origin,
        )


# -- configuration ------------------------------------------------------------------------------


def _seed_rules(seed: WhitelistSeed) -> dict[str, Any]:
    return {
        "allowed_params_json": seed.params,
        "enabled": seed.enabled,
        "schedule": seed.schedule,
        "max_attempts": seed.max_attempts,
        "grace_seconds": seed.grace_seconds,
        "description": seed.description,
        "sources": seed.sources,
        "calendars": seed.calendars,
    }


async def _apply_seeds(queue: CommandQueue, seeds: list[WhitelistSeed]) -> None:
    async with queue.ctx.db.write() as s:
        for seed in seeds:
            action = seed.action.upper()
            rules = _seed_rules(seed)
            found = await s.execute(select(WL).where(WL.c.system == seed.system, WL.c.action == action))
            row = found.mappings().first()
            if row is None:
                await add_entry(s, queue, seed.system, action, rules, source="config", actor=CONFIG_ACTOR)
                continue
            changed = {k: v for k, v in rules.items() if row[k] != v}
            if changed:
                await change_entry(s, queue, row, changed, source="config", actor=CONFIG_ACTOR)


async def seed_from_config(queue: CommandQueue, settings: CommandsSettings) -> None:
    """Apply the ``commands.whitelist`` entries: insert missing ones, change changed ones.

    Both go through the API's path, so pending commands are re-checked the same way.
    """
    if not settings.whitelist:
        return
    try:
        await _apply_seeds(queue, settings.whitelist)
    except (IntegrityError, Conflict):
        # Another replica seeded the same entries at the same moment: its insert either met ours
        # on the unique key, or committed between our look-up and add_entry's own check (read
        # committed on PostgreSQL). Once more sees its rows.
        await _apply_seeds(queue, settings.whitelist)
