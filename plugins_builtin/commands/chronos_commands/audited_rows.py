"""Row changes that leave an audit trail (whitelist entries and workflows)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import Origin, Principal, record_audit, utcnow


async def update_audited(
    s: AsyncSession,
    table: Any,
    row_id: int,
    entity: str,
    before: Any,
    changes: dict[str, Any],
    *,
    unaudited: dict[str, Any] | None = None,
    principal: Principal | None = None,
    origin: Origin | None = None,
    actor: str | None = None,
) -> Any:
    """Apply ``changes`` to one row and audit each field's old and new value; no changes, no write.

    ``unaudited`` columns (bookkeeping such as where the row was last set from) are written along
    with the changes but not listed in the audit row.
    """
    if not changes:
        return before
    values = {**changes, **(unaudited or {}), "updated_at": utcnow()}
    row = (
        (await s.execute(update(table).where(table.c.id == row_id).values(**values).returning(*table.c)))
        .mappings()
        .one()
    )
    await record_audit(
        s,
        entity=entity,
        entity_id=row_id,
        action="update",
        change={k: {"from": before[k], "to": v} for k, v in changes.items()},
        principal=principal,
        origin=origin,
        actor=actor,
    )
    return row
