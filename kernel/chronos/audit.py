"""The append-only audit log with a hash chain.

Each row stores the hash of the previous row and its own hash over its content,
so changing or deleting a row breaks the chain at that point
(``chronos audit verify``). Rows are written in the caller's transaction, so an
audited change and its audit row commit or roll back together.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.db.base import utcnow
from chronos.db.models import AuditEntry
from chronos.identity import PG_AUDIT_LOCK, Origin, Principal

GENESIS = "0" * 64


def _digest(prev_hash: str, row: dict[str, Any]) -> str:
    payload = json.dumps(row, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256((prev_hash + payload).encode("utf-8")).hexdigest()


def _content(e: AuditEntry) -> dict[str, Any]:
    at: datetime = e.at
    return {
        "at": at.isoformat(timespec="microseconds"),
        "actor": e.actor,
        "scope": e.scope,
        "entity": e.entity,
        "entity_id": e.entity_id,
        "action": e.action,
        "change": e.change,
        "ip": e.ip,
        "request_id": e.request_id,
    }


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from a JSON column (datetimes become ISO 8601 strings).

    Normalising before the hash is computed keeps ``verify_chain`` stable on both backends.
    """
    if value is None:
        return None

    def default(o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        if isinstance(o, (set, frozenset)):
            return sorted(o, key=str)
        return str(o)

    return json.loads(json.dumps(value, default=default))


async def record_audit(
    session: AsyncSession,
    *,
    entity: str,
    action: str,
    entity_id: str | int | None = None,
    change: Any = None,
    principal: Principal | None = None,
    origin: Origin | None = None,
    actor: str | None = None,
) -> AuditEntry:
    """Append one audit row inside ``session``'s transaction.

    Pass the request's ``origin`` (actor, scope, ip and request id are taken
    from it) or a principal; background work passes ``actor="system:<job>"``.
    """
    if origin is not None and principal is None:
        principal = origin.principal
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        # The chain needs a total order; this lock serialises appends only.
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_AUDIT_LOCK})
    last = (await session.execute(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))).scalar()
    entry = AuditEntry(
        at=utcnow(),
        actor=actor or (principal.key_id if principal else None),
        scope=principal.scope_used if principal else None,
        entity=entity,
        entity_id=None if entity_id is None else str(entity_id),
        action=action,
        change=_jsonable(change),
        ip=origin.ip if origin is not None else None,
        request_id=origin.request_id if origin is not None else None,
        prev_hash=last or GENESIS,
    )
    entry.hash = _digest(entry.prev_hash, _content(entry))
    session.add(entry)
    await session.flush()
    return entry


async def record_audit_many(session: AsyncSession, records: list[dict[str, Any]]) -> int:
    """Append several audit rows inside ``session``'s transaction, in order; returns how many.

    Each record holds the keyword arguments of :func:`record_audit`
    (``entity``, ``action``; optionally ``entity_id``, ``change``,
    ``principal``, ``origin``, ``actor``). The chain is read once and the rows
    are inserted with one executemany: bulk work (a batch of queue
    acknowledgements) pays two round trips instead of two per row.
    """
    if not records:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_AUDIT_LOCK})
    prev = (await session.execute(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))).scalar() or GENESIS
    entries = []
    for rec in records:
        origin: Origin | None = rec.get("origin")
        principal = rec.get("principal")
        if origin is not None and principal is None:
            principal = origin.principal
        entity_id = rec.get("entity_id")
        entry = SimpleNamespace(
            at=utcnow(),
            actor=rec.get("actor") or (principal.key_id if principal else None),
            scope=principal.scope_used if principal else None,
            entity=rec["entity"],
            entity_id=None if entity_id is None else str(entity_id),
            action=rec["action"],
            change=_jsonable(rec.get("change")),
            ip=origin.ip if origin is not None else None,
            request_id=origin.request_id if origin is not None else None,
            prev_hash=prev,
        )
        entry.hash = prev = _digest(entry.prev_hash, _content(entry))  # type: ignore[arg-type]
        entries.append(vars(entry))
    # Core executemany: the ORM would insert row by row to learn each id, which nobody needs here.
    await session.execute(insert(cast(Table, AuditEntry.__table__)), entries)
    return len(entries)


async def verify_chain(session: AsyncSession, batch: int = 5000) -> tuple[int, int | None, str | None]:
    """(rows checked, id of the first broken row or None, reason)."""
    prev = GENESIS
    checked = 0
    last_id = 0
    while True:
        rows = (
            (
                await session.execute(
                    select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(batch)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            return checked, None, None
        for e in rows:
            if e.prev_hash != prev:
                return checked, e.id, "prev_hash does not match the previous row (a row was removed or reordered)"
            if _digest(e.prev_hash, _content(e)) != e.hash:
                return checked, e.id, "content does not match its hash (the row was changed)"
            prev = e.hash
            checked += 1
            last_id = e.id
