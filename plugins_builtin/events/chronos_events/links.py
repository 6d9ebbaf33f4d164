"""Links between events: create, page through, remove (each change audited)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select

from chronos.plugin import (
    Conflict,
    NotFound,
    Origin,
    PluginContext,
    Principal,
    decode_cursor,
    encode_cursor,
    record_audit,
)

from chronos_events.models import EventLink
from chronos_events.query import iso_z
from chronos_events.schemas import LinkType
from chronos_events.service import event_row, event_store, invalid

L = EventLink.__table__


def link_item(row: Any, event_id: int) -> dict[str, Any]:
    """A link row as the API's JSON object, seen from ``event_id``."""
    return {
        "id": row.id,
        "type": row.type,
        "from_event_id": row.from_event_id,
        "to_event_id": row.to_event_id,
        "direction": "outgoing" if row.from_event_id == event_id else "incoming",
        "created_at": iso_z(row.created_at),
    }


def _link_change(row: Any) -> dict[str, Any]:
    return {"from_event_id": row.from_event_id, "to_event_id": row.to_event_id, "type": row.type}


async def _check_ends(s: Any, ctx: PluginContext, event_id: int, to_event_id: int) -> None:
    store = event_store(ctx)
    await event_row(s, store, event_id)
    if await store.row(s, to_event_id) is None:
        raise invalid(f"No event with id {to_event_id}", "/to_event_id", "no such event")


async def _refuse_duplicate(s: Any, event_id: int, to_event_id: int, link_type: LinkType) -> None:
    dup = (
        await s.execute(
            select(L.c.id).where(L.c.from_event_id == event_id, L.c.to_event_id == to_event_id, L.c.type == link_type)
        )
    ).scalar()
    if dup is not None:
        raise Conflict(f"This link exists already (id {dup})", type="conflict", link_id=dup)


async def create_link(
    ctx: PluginContext,
    event_id: int,
    to_event_id: int,
    link_type: LinkType,
    *,
    principal: Principal,
    origin: Origin | None,
) -> dict[str, Any]:
    """Link ``event_id`` to ``to_event_id``; returns the new link."""
    if to_event_id == event_id:
        raise invalid("An event cannot link to itself", "/to_event_id", "equals the event's own id")
    async with ctx.db.write() as s:
        await _check_ends(s, ctx, event_id, to_event_id)
        await _refuse_duplicate(s, event_id, to_event_id, link_type)
        new_id = (
            await s.execute(
                insert(L)
                .values(
                    from_event_id=event_id,
                    to_event_id=to_event_id,
                    type=link_type,
                    created_at=datetime.now(UTC),
                    created_by=principal.key_id,
                )
                .returning(L.c.id)
            )
        ).scalar_one()
        await record_audit(
            s,
            entity="event_link",
            action="create",
            entity_id=new_id,
            change={"from_event_id": event_id, "to_event_id": to_event_id, "type": link_type},
            principal=principal,
            origin=origin,
        )
        row = (await s.execute(select(L).where(L.c.id == new_id))).first()
    return link_item(row, event_id)


async def list_links(ctx: PluginContext, event_id: int, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of the links from and to ``event_id``, by link id."""
    async with ctx.db.read() as s:
        await event_row(s, event_store(ctx), event_id)
        stmt = select(L).where(or_(L.c.from_event_id == event_id, L.c.to_event_id == event_id))
        if cursor:
            (after,) = decode_cursor(f"event-links:{event_id}", cursor, [int])
            stmt = stmt.where(L.c.id > after)
        rows = (await s.execute(stmt.order_by(L.c.id).limit(limit + 1))).all()
    items = [link_item(r, event_id) for r in rows[:limit]]
    next_cursor = encode_cursor(f"event-links:{event_id}", [items[-1]["id"]]) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


async def delete_link(
    ctx: PluginContext, event_id: int, link_id: int, *, principal: Principal, origin: Origin | None
) -> None:
    """Remove one link of ``event_id`` (either direction)."""
    async with ctx.db.write() as s:
        row = (
            await s.execute(
                select(L).where(L.c.id == link_id, or_(L.c.from_event_id == event_id, L.c.to_event_id == event_id))
            )
        ).first()
        if row is None:
            raise NotFound(f"Event {event_id} has no link {link_id}", type="not-found")
        await s.execute(delete(L).where(L.c.id == link_id))
        await record_audit(
            s,
            entity="event_link",
            action="delete",
            entity_id=link_id,
            change=_link_change(row),
            principal=principal,
            origin=origin,
        )


async def delete_links_to(
    ctx: PluginContext,
    event_id: int,
    to: int,
    link_type: LinkType | None,
    *,
    principal: Principal,
    origin: Origin | None,
) -> None:
    """Remove the links from ``event_id`` to ``to`` (of one type, or all)."""
    async with ctx.db.write() as s:
        cond = [L.c.from_event_id == event_id, L.c.to_event_id == to]
        if link_type is not None:
            cond.append(L.c.type == link_type)
        rows = (await s.execute(select(L).where(*cond))).all()
        if not rows:
            raise NotFound(f"Event {event_id} has no link to event {to}", type="not-found")
        await s.execute(delete(L).where(L.c.id.in_([r.id for r in rows])))
        for r in rows:
            await record_audit(
                s,
                entity="event_link",
                action="delete",
                entity_id=r.id,
                change=_link_change(r),
                principal=principal,
                origin=origin,
            )
