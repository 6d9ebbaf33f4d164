"""The append-only audit log with an HMAC chain and signed head checkpoints.

Each row stores the previous row's hash and its own: an HMAC-SHA256, keyed
with a secret kept outside the database (:mod:`chronos.audit_key`), over the
previous hash and the row's content. Changing, removing or reordering a row
breaks the chain at that point, and without the key nobody can rebuild it.
Deleting the newest rows leaves a valid chain, so the head is signed too:
:func:`write_checkpoint` (a job, and on shutdown) stores the last row's id and
hash with an HMAC, and :func:`verify_chain` compares the chain with the newest
checkpoint. Rows are written in the caller's transaction, so an audited change
and its audit row commit or roll back together.

Rows written before the switch to HMAC keep their plain SHA-256 hashes: the
first checkpoint, written before the first HMAC row, names the last of them
(``legacy_until``), and they are verified the old way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import weakref
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.audit_key import audit_key_for
from chronos.db.base import utcnow
from chronos.db.models import AuditCheckpoint, AuditEntry
from chronos.identity import Origin, Principal

GENESIS = "0" * 64
#: Serialises appends to the chain on PostgreSQL (an advisory transaction lock).
PG_AUDIT_LOCK = 7_458_142_002


def _payload(prev_hash: str, row: dict[str, Any]) -> bytes:
    payload = json.dumps(row, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return (prev_hash + payload).encode("utf-8")


def _digest(prev_hash: str, row: dict[str, Any]) -> str:
    """The plain SHA-256 of rows written before the switch to HMAC (verification only)."""
    return hashlib.sha256(_payload(prev_hash, row)).hexdigest()


def _mac(key: bytes, prev_hash: str, row: dict[str, Any]) -> str:
    return hmac.new(key, _payload(prev_hash, row), hashlib.sha256).hexdigest()


def _checkpoint_signature(key: bytes, at: datetime, last_id: int, last_hash: str, legacy_until: int) -> str:
    message = f"checkpoint|{at.isoformat(timespec='microseconds')}|{last_id}|{last_hash}|{legacy_until}"
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


#: Engines whose first checkpoint (which marks the switch to HMAC) is known to exist.
_SWITCHED: weakref.WeakSet[Any] = weakref.WeakSet()


async def _chain_head(session: AsyncSession) -> tuple[bytes, str]:
    """(key, hash of the newest row) under the append lock; writes the switch checkpoint once if missing."""
    bind = session.get_bind()
    key = audit_key_for(bind)
    if bind.dialect.name == "postgresql":
        # The chain needs a total order; this lock serialises appends only.
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_AUDIT_LOCK})
    last = (
        await session.execute(select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))
    ).first()
    engine = getattr(bind, "engine", bind)
    if engine not in _SWITCHED:
        if (await session.execute(select(AuditCheckpoint.id).limit(1))).first() is None:
            # Every row so far was chained with the plain hash: the first checkpoint says so.
            # (Remembered only once seen committed: this transaction may still roll back.)
            last_id, last_hash = (last[0], last[1]) if last else (0, GENESIS)
            session.add(_checkpoint(key, last_id, last_hash, legacy_until=last_id))
            await session.flush()
        else:
            _SWITCHED.add(engine)
    return key, (last[1] if last else GENESIS)


def _checkpoint(key: bytes, last_id: int, last_hash: str, *, legacy_until: int) -> AuditCheckpoint:
    at = utcnow()
    return AuditCheckpoint(
        at=at,
        last_id=last_id,
        last_hash=last_hash,
        legacy_until=legacy_until,
        signature=_checkpoint_signature(key, at, last_id, last_hash, legacy_until),
    )


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
    key, last = await _chain_head(session)
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
        prev_hash=last,
    )
    entry.hash = _mac(key, entry.prev_hash, _content(entry))
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
    key, prev = await _chain_head(session)
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
        entry.hash = prev = _mac(key, entry.prev_hash, _content(entry))  # type: ignore[arg-type]
        entries.append(vars(entry))
    # Core executemany: the ORM would insert row by row to learn each id, which nobody needs here.
    await session.execute(insert(cast(Table, AuditEntry.__table__)), entries)
    return len(entries)


async def write_checkpoint(session: AsyncSession) -> AuditCheckpoint:
    """Sign the chain's current head (inside ``session``'s transaction)."""
    key, _ = await _chain_head(session)
    last = (
        await session.execute(select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))
    ).first()
    legacy_until = (await session.execute(select(func.min(AuditCheckpoint.legacy_until)))).scalar() or 0
    checkpoint = _checkpoint(key, last[0] if last else 0, last[1] if last else GENESIS, legacy_until=legacy_until)
    session.add(checkpoint)
    await session.flush()
    return checkpoint


async def _valid_checkpoints(session: AsyncSession, key: bytes) -> tuple[list[AuditCheckpoint], int]:
    """(checkpoints whose signature holds, oldest first; how many did not hold)."""
    rows = (await session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id))).scalars().all()
    valid = [
        c
        for c in rows
        if hmac.compare_digest(c.signature, _checkpoint_signature(key, c.at, c.last_id, c.last_hash, c.legacy_until))
    ]
    return valid, len(rows) - len(valid)


async def verify_chain(session: AsyncSession, batch: int = 5000) -> tuple[int, int | None, str | None]:
    """(rows checked, id of the first broken row or None, reason).

    Rows up to the first checkpoint's ``legacy_until`` are checked with the plain
    hash, every later one with the key; the newest checkpoint's row must still be
    there, unchanged (otherwise rows were deleted from the end). ``broken`` is 0
    when the checkpoints themselves are the problem.
    """
    key = audit_key_for(session.get_bind())
    checkpoints, forged = await _valid_checkpoints(session, key)
    if forged:
        return 0, 0, f"{forged} checkpoint(s) carry no valid signature (forged or written with another key)"
    has_rows = (await session.execute(select(AuditEntry.id).limit(1))).first() is not None
    if not checkpoints:
        if has_rows:
            return 0, 0, "no signed checkpoint: the head of the chain cannot be confirmed (checkpoints were deleted?)"
        return 0, None, None
    legacy_until = checkpoints[0].legacy_until
    newest = checkpoints[-1]
    prev = GENESIS
    checked = 0
    last_id = 0
    seen_newest = newest.last_id == 0
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
            break
        for e in rows:
            if e.prev_hash != prev:
                return checked, e.id, "prev_hash does not match the previous row (a row was removed or reordered)"
            content = _content(e)
            expected = _digest(e.prev_hash, content) if e.id <= legacy_until else _mac(key, e.prev_hash, content)
            if not hmac.compare_digest(expected, e.hash):
                return checked, e.id, "content does not match its hash (the row was changed)"
            if e.id == newest.last_id:
                if e.hash != newest.last_hash:
                    return checked, e.id, "the row differs from the one the newest checkpoint signed"
                seen_newest = True
            prev = e.hash
            checked += 1
            last_id = e.id
    if not seen_newest:
        return (
            checked,
            newest.last_id,
            f"row {newest.last_id}, signed by the checkpoint of {newest.at.isoformat(timespec='seconds')}, is missing"
            " (the newest rows were deleted)",
        )
    return checked, None, None
