"""The command queue: enqueue, lease, heartbeat, complete, fail, retry, cancel, recover.

Every state change is decided inside one write transaction on rows it has
locked, so two pollers can never lease the same command and two callbacks can
never both win. On PostgreSQL the lease is ``WITH due AS MATERIALIZED (SELECT
... FOR UPDATE SKIP LOCKED LIMIT n) UPDATE ... WHERE id IN (SELECT id FROM due)
RETURNING``; on SQLite the kernel's single writer path (``BEGIN IMMEDIATE``)
serialises write transactions, so the same statement is atomic there as well.

``attempts`` counts leases: a command is charged an attempt when a poller takes
it, so a worker that crashes mid-run (its lease expires) has used an attempt
just like one that reports a failure.

Completions are group-committed: callbacks that arrive while a write is in
flight share the next transaction (one locking SELECT, one executemany UPDATE,
one multi-row audit insert), each still decided and answered on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, false, func, insert, literal, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    ChronosError,
    Conflict,
    JSONType,
    NotFound,
    NotPermitted,
    Origin,
    PluginContext,
    Principal,
    UTCDateTime,
    decode_cursor,
    encode_cursor,
    record_audit,
    record_audit_many,
    utcnow,
)

from chronos_commands.models import ExternalCommand, WhitelistEntry, Workflow
from chronos_commands.outbox_events import publish
from chronos_commands.settings import CommandsSettings
from chronos_commands.whitelist import (
    Violation,
    check_against,
    check_origin,
    check_params,
    check_payload,
    refusal,
    storable_text,
)

T = ExternalCommand.__table__
W = WhitelistEntry.__table__
WF = Workflow.__table__
MANAGE = "commands.manage"
COMPLETION_BATCH = 200
#: Missed commands moved per UPDATE (each carries its own reason; bind parameters stay well below the limits).
MISSED_BATCH = 1000


def _has_rules(outcome: str) -> Any:
    """Whether an enabled workflow rule listens to this command's ``outcome`` (read in RETURNING,
    so the common case, no rules, costs no extra round trip)."""
    return (
        exists()
        .where(
            WF.c.trigger_command == T.c.command,
            WF.c.on_status == outcome,
            WF.c.enabled.is_(True),
            or_(WF.c.trigger_target.is_(None), WF.c.trigger_target == T.c.target_system),
        )
        .label("has_rules")
    )


def _lease_statement() -> Any:
    """The lease, built once with bind parameters (its shape never changes)."""
    now = bindparam("now", type_=UTCDateTime())
    allowed = exists().where(W.c.system == T.c.target_system, W.c.action == T.c.command, W.c.enabled == true())
    due = (
        select(T.c.id)
        .where(T.c.target_system == bindparam("system"), T.c.status == "pending", T.c.not_before <= now, allowed)
        .order_by(T.c.not_before, T.c.id)
        .limit(bindparam("lim"))
        .with_for_update(skip_locked=True, of=T)
        .cte("due")
        # PostgreSQL may re-run an IN (SELECT ... LIMIT) sub-plan for every
        # outer row, and each run would skip the rows the previous one just
        # locked; a materialised CTE runs exactly once.
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return (
        update(T)
        .where(T.c.id.in_(select(due.c.id)), T.c.status == "pending")
        .values(
            status="processing",
            attempts=T.c.attempts + 1,
            lease_expires_at=bindparam("expires", type_=UTCDateTime()),
            lease_token=bindparam("token"),
            leased_by=bindparam("by"),
            leased_at=now,
            updated_at=now,
        )
        .returning(*T.c)
    )


def iso(value: datetime | None) -> str | None:
    """UTC with ``Z``, the API's one time format."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def command_view(row: Any) -> dict[str, Any]:
    """The public JSON shape of a command."""
    source = None
    if row["source"] is not None or row["event_id"] is not None:
        source = {
            "source": row["source"],
            "calendar_id": row["calendar_id"],
            "uid": row["source_uid"],
            "recurrence_id": row["recurrence_id"],
            "event_id": row["event_id"],
            "event_start": iso(row["event_start"]),
        }
    return {
        "id": row["id"],
        "target_system": row["target_system"],
        "command": row["command"],
        "params": row["params_json"] or {},
        "args": row["args"] or [],
        "status": row["status"],
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "not_before": iso(row["not_before"]),
        "lease_expires_at": iso(row["lease_expires_at"]),
        "lease_token": row["lease_token"],
        "result": row["result_json"],
        "error": row["error"],
        "origin": row["origin"],
        "source": source,
        "parent_command_id": row["parent_command_id"],
        "workflow_id": row["workflow_id"],
        "workflow_depth": row["workflow_depth"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "completed_at": iso(row["completed_at"]),
    }


def span(seconds: float) -> str:
    """A duration for people: ``45 s``, ``12 min``, ``3 h 12 min``, ``2 d 5 h``."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def missed_reason(late: timedelta, grace_seconds: int) -> str:
    """Why a command was not handed out, for the person reading its ``error``."""
    return (
        f"missed its time by {span(late.total_seconds())} (grace {grace_seconds} s); not run - retry it to run it now"
    )


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(*parts: Any) -> str:
    return hashlib.sha256(canonical(list(parts)).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class NewCommand:
    """What every path (API, calendar, workflow) hands to :meth:`CommandQueue.insert`."""

    target_system: str
    command: str
    params: dict[str, Any]
    args: list[str]
    idempotency_key: str
    origin: str
    not_before: datetime | None = None
    max_attempts: int | None = None
    request_hash: str | None = None
    created_by: str | None = None
    source: str | None = None
    calendar_id: str | None = None
    source_uid: str | None = None
    recurrence_id: str | None = None
    event_id: int | None = None
    event_start: datetime | None = None
    parent_command_id: int | None = None
    workflow_id: int | None = None
    workflow_depth: int = 0
    entry_kept: bool = False


def _insert_values(new: NewCommand, max_attempts: int, now: datetime) -> dict[str, Any]:
    """The columns of a new pending command."""
    return dict(
        target_system=new.target_system,
        command=new.command,
        params_json=new.params,
        args=new.args,
        status="pending",
        attempts=0,
        max_attempts=max_attempts,
        not_before=new.not_before or now,
        idempotency_key=new.idempotency_key,
        request_hash=new.request_hash,
        origin=new.origin,
        source=new.source,
        calendar_id=new.calendar_id,
        source_uid=new.source_uid,
        recurrence_id=new.recurrence_id,
        event_id=new.event_id,
        event_start=new.event_start,
        parent_command_id=new.parent_command_id,
        workflow_id=new.workflow_id,
        workflow_depth=new.workflow_depth,
        entry_kept=new.entry_kept,
        created_by=new.created_by,
        created_at=now,
        updated_at=now,
    )


class Rejected(Exception):
    """The whitelist (or the payload check) refused a command."""

    def __init__(self, violations: list[Violation], kind: str = "not-whitelisted") -> None:
        super().__init__("; ".join(f"{v.pointer}: {v.detail}" for v in violations))
        self.violations = violations
        self.kind = kind

    def error(self) -> ChronosError:
        return refusal(self.violations, self.kind, "The command is refused")


@dataclass
class _Completion:
    command_id: int
    result: Any
    token: str
    principal: Principal | None
    origin: Origin | None
    future: asyncio.Future[Any]


_LEASE = _lease_statement()
# Completion: read (and lock) a batch's rows at once, then one executemany UPDATE.
_COMPLETE_READ = (
    select(T, _has_rules("completed"))
    .where(T.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(T.c.id)
    .with_for_update(of=T)
)
_COMPLETE_WRITE = (
    update(T)
    .where(T.c.id == bindparam("cid"))
    .values(
        status="completed",
        result_json=bindparam("result", type_=JSONType),
        completed_at=bindparam("now", type_=UTCDateTime()),
        updated_at=bindparam("now", type_=UTCDateTime()),
        lease_expires_at=None,
    )
)


class CommandQueue:
    """The queue's operations; the HTTP routes, the calendar sink and workflows call these."""

    def __init__(self, ctx: PluginContext, settings: CommandsSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.workflows: Any = None  # set by the plugin: a WorkflowEngine
        self._completions: list[_Completion] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- authorisation ----------------------------------------------------------

    @staticmethod
    def may_act(principal: Principal | None, system: str) -> bool:
        """A key bound to systems acts on those systems' commands only, whatever its scopes
        (``commands.manage`` and ``admin`` included); an unbound key needs ``commands.manage``."""
        if principal is None:
            return True
        if principal.systems:
            return principal.bound_to(system)
        return principal.has(MANAGE)

    def authorize_system(self, principal: Principal | None, system: str) -> None:
        """403 ``forbidden-system`` unless ``principal`` may act on ``system``'s commands."""
        if not self.may_act(principal, system):
            bound = ", ".join(sorted(principal.systems)) if principal else ""
            raise NotPermitted(
                f"This key is bound to {bound or 'no system'} and may not act on commands of {system!r}",
                type="forbidden-system",
            )

    def _authorize(self, principal: Principal | None, row: Any) -> None:
        self.authorize_system(principal, row["target_system"])

    # -- whitelist and insert -----------------------------------------------------

    async def whitelist_entry(
        self, s: AsyncSession, system: str, command: str, *, lock: bool = False
    ) -> dict[str, Any] | None:
        """The entry for (system, command). ``lock`` (write transactions that insert a command)
        takes a share lock on PostgreSQL, so a concurrent change of the entry either waits for
        the insert to commit (and then re-checks the new command with the other pending ones)
        or commits first (and the insert sees the new rules)."""
        q = select(W).where(W.c.system == system, W.c.action == command)
        if lock:
            q = q.with_for_update(read=True)
        row = (await s.execute(q)).mappings().first()
        return dict(row) if row is not None else None

    async def check(
        self,
        s: AsyncSession,
        new: NewCommand,
        *,
        cache: dict[tuple[str, str], Any] | None = None,
        lock: bool = False,
    ) -> dict[str, Any]:
        """Payload shape and whitelist; returns the whitelist entry or raises :class:`Rejected`.

        ``cache`` (per batch) saves the lookup when many entries name one (system, command);
        ``lock`` share-locks the entry (see :meth:`whitelist_entry`).
        """
        violations = check_payload(new.target_system, new.command, new.params, new.args)
        if violations:
            raise Rejected(violations, "validation")
        pair = (new.target_system, new.command)
        if cache is not None and pair in cache:
            entry = cache[pair]
        else:
            entry = await self.whitelist_entry(s, new.target_system, new.command, lock=lock)
            if cache is not None:
                cache[pair] = entry
        calendar = (new.source, new.calendar_id) if new.origin == "calendar" else None
        violations = check_against(entry, new.target_system, new.command, new.params, calendar=calendar)
        if violations:
            raise Rejected(violations)
        assert entry is not None
        return entry

    async def find_by_key(self, s: AsyncSession, key: str) -> Any:
        return (await s.execute(select(T).where(T.c.idempotency_key == key))).mappings().first()

    async def insert(
        self,
        s: AsyncSession,
        new: NewCommand,
        *,
        entry: dict[str, Any] | None = None,
        principal: Principal | None = None,
        origin: Origin | None = None,
        actor: str | None = None,
    ) -> tuple[Any, bool]:
        """Check and insert ``new`` unless its idempotency key exists: (row, created).

        The whitelist applies here, so every path that creates a command
        passes it. Runs inside the caller's transaction with its audit row.
        """
        existing = await self.find_by_key(s, new.idempotency_key)
        if existing is not None:
            return existing, False
        if entry is None:
            entry = await self.check(s, new, lock=True)
        now = utcnow()
        max_attempts = new.max_attempts or entry.get("max_attempts") or self.settings.default_max_attempts
        values = _insert_values(new, max_attempts, now)
        row = (await s.execute(insert(T).values(**values).returning(*T.c))).mappings().one()
        await record_audit(
            s,
            entity="command",
            entity_id=row["id"],
            action="create",
            change={
                "target_system": new.target_system,
                "command": new.command,
                "params": new.params,
                "args": new.args,
                "origin": new.origin,
                "not_before": iso(row["not_before"]),
                **(
                    {"workflow_id": new.workflow_id, "parent_command_id": new.parent_command_id}
                    if new.workflow_id
                    else {}
                ),
                **({"source": new.source, "calendar_id": new.calendar_id, "uid": new.source_uid} if new.source else {}),
            },
            principal=principal,
            origin=origin,
            actor=actor,
        )
        return row, True

    # -- leasing ---------------------------------------------------------------------

    async def lease(
        self, system: str, *, limit: int = 10, lease_seconds: int | None = None, principal: Principal | None = None
    ) -> list[dict[str, Any]]:
        """Lease up to ``limit`` due pending commands of ``system``, oldest first.

        A poll that finds fewer than ``limit`` due commands first returns the
        system's expired leases to the queue (the job ``commands.recover`` does
        it for every system, busy or not), so an idle worker picks a stalled
        command up at once while a busy queue pays one statement per poll.
        Only commands whose (system, command) is still enabled in the whitelist
        are handed out: disabling an entry holds its queued commands, nothing
        is lost. A command later than its entry's ``grace_seconds`` is not
        handed out but ``missed`` (see :meth:`expire_missed`). A key bound to
        other systems gets 403.
        """
        self.authorize_system(principal, system)
        seconds = lease_seconds or self.settings.default_lease_seconds
        token = secrets.token_hex(8)
        async with self.ctx.db.write() as s:
            now = utcnow()
            await self.expire_missed(s, now, system=system)
            rows = await self._lease(s, system, limit, seconds, token, principal, now)
            if len(rows) < limit and await self.recover(s, now, system=system):
                # Recovered commands are judged against their grace like any other before a hand-out.
                await self.expire_missed(s, now, system=system)
                rows += await self._lease(s, system, limit - len(rows), seconds, token, principal, now)
            who: dict[str, Any] = {"principal": principal} if principal else {"actor": "system:commands"}
            await record_audit_many(
                s,
                [
                    {
                        "entity": "command",
                        "entity_id": r["id"],
                        "action": "lease",
                        "change": {
                            "system": system,
                            "attempt": r["attempts"],
                            "expires_at": iso(r["lease_expires_at"]),
                        },
                        **who,
                    }
                    for r in rows
                ],
            )
        return [command_view(r) for r in sorted(rows, key=lambda r: (r["not_before"], r["id"]))]

    async def _lease(
        self,
        s: AsyncSession,
        system: str,
        limit: int,
        seconds: int,
        token: str,
        principal: Principal | None,
        now: datetime,
    ) -> list[Any]:
        params = {
            "system": system,
            "now": now,
            "lim": limit,
            "expires": now + timedelta(seconds=seconds),
            "token": token,
            "by": principal.key_id if principal else None,
        }
        return list((await s.execute(_LEASE, params)).mappings().all())

    async def recover(self, s: AsyncSession, now: datetime, *, system: str | None = None) -> int:
        """Return expired leases to ``pending``, or mark them ``dead`` after the last attempt.

        One statement (the common case finds nothing); the attempt was counted
        when the lease was handed out.
        """
        cond = [T.c.status == "processing", T.c.lease_expires_at < now]
        if system is not None:
            cond.insert(0, T.c.target_system == system)
        stalled = (
            select(T.c.id)
            .where(*cond)
            .with_for_update(skip_locked=True)
            .cte("stalled")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        last = T.c.attempts >= T.c.max_attempts
        rows = (
            (
                await s.execute(
                    update(T)
                    .where(T.c.id.in_(select(stalled.c.id)), T.c.status == "processing")
                    .values(
                        status=case((last, "dead"), else_="pending"),
                        completed_at=case((last, literal(now, UTCDateTime())), else_=None),
                        error=case((last, "lease expired on the last attempt"), else_="lease expired"),
                        lease_expires_at=None,
                        updated_at=now,
                    )
                    .returning(*T.c)
                )
            )
            .mappings()
            .all()
        )
        for r in sorted(rows, key=lambda r: r["id"]):
            await record_audit(
                s,
                entity="command",
                entity_id=r["id"],
                action="dead" if r["status"] == "dead" else "lease_expired",
                change={"status": r["status"], "attempts": r["attempts"], "error": r["error"]},
                actor="system:commands.recover",
            )
            if r["status"] == "dead" and self.workflows is not None:
                await self.workflows.fire(s, r, "failed", actor="system:commands.recover")
        if rows:
            await publish(
                self.ctx, s, [("command.dead" if r["status"] == "dead" else "command.expired", r) for r in rows]
            )
        return len(rows)

    async def recover_all(self) -> int:
        async with self.ctx.db.write() as s:
            now = utcnow()
            await self.expire_missed(s, now)
            return await self.recover(s, now)

    async def expire_missed(self, s: AsyncSession, now: datetime, *, system: str | None = None) -> list[int]:
        """Move pending commands later than their whitelist entry's ``grace_seconds`` to ``missed``.

        Runs in the lease's transaction before anything is handed out (and in the
        ``commands.recover`` job for every system), so no poller, on any worker, gets a
        command later than its grace. Only enabled entries with a grace count: a disabled
        entry holds its commands, and they are judged when it is enabled again. Each
        missed command gets a reason as its ``error``, an audit row and a
        ``command.missed`` outbox event. One small read of the entries with a grace
        (none: nothing else happens), one locking read of the late commands, one UPDATE.
        """
        q = select(W.c.system, W.c.action, W.c.grace_seconds).where(
            W.c.grace_seconds.is_not(None), W.c.enabled == true()
        )
        if system is not None:
            q = q.where(W.c.system == system)
        entries = (await s.execute(q)).all()
        if not entries:
            return []
        late = or_(
            *(
                and_(
                    T.c.target_system == e.system,
                    T.c.command == e.action,
                    T.c.not_before < now - timedelta(seconds=e.grace_seconds),
                )
                for e in entries
            )
        )
        cond = [T.c.status == "pending", late]
        if system is not None:
            cond.insert(0, T.c.target_system == system)
        rows = (
            (
                await s.execute(
                    select(T.c.id, T.c.target_system, T.c.command, T.c.not_before)
                    .where(*cond)
                    .order_by(T.c.id)
                    .with_for_update(of=T)
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            return []
        grace = {(e.system, e.action): e.grace_seconds for e in entries}
        reasons = {
            r["id"]: missed_reason(now - r["not_before"], grace[(r["target_system"], r["command"])]) for r in rows
        }
        ids = list(reasons)
        new: list[Any] = []
        for i in range(0, len(ids), MISSED_BATCH):  # one UPDATE, unless a long downtime left thousands
            chunk = {cid: reasons[cid] for cid in ids[i : i + MISSED_BATCH]}
            new += (
                (
                    await s.execute(
                        update(T)
                        .where(T.c.id.in_(list(chunk)), T.c.status == "pending")
                        .values(
                            status="missed",
                            error=case(chunk, value=T.c.id),
                            lease_expires_at=None,
                            completed_at=now,
                            updated_at=now,
                        )
                        .returning(*T.c)
                    )
                )
                .mappings()
                .all()
            )
        new.sort(key=lambda r: r["id"])
        await record_audit_many(
            s,
            [
                {
                    "entity": "command",
                    "entity_id": r["id"],
                    "action": "missed",
                    "change": {
                        "status": "missed",
                        "previous_status": "pending",
                        "not_before": iso(r["not_before"]),
                        "late_seconds": int((now - r["not_before"]).total_seconds()),
                        "grace_seconds": grace[(r["target_system"], r["command"])],
                        "reason": r["error"],
                    },
                    "actor": "system:commands",
                }
                for r in new
            ],
        )
        await publish(self.ctx, s, [("command.missed", r) for r in new])
        await self._fire_missed(s, new)
        return [r["id"] for r in new]

    async def _fire_missed(self, s: AsyncSession, missed: list[Any]) -> None:
        """A missed command did not run: its ``on: failed`` workflow rules fire, as for a failed or dead
        one (the template's ``status`` says ``missed``, ``error`` the reason). One query for the rules."""
        if not missed or self.workflows is None:
            return
        rules = await self.workflows.rules_for(s, {r["command"] for r in missed}, "failed")
        if not rules:
            return
        for row in missed:
            await self.workflows.fire(s, row, "failed", actor="system:commands", rules=rules)

    # -- callbacks ---------------------------------------------------------------------

    async def _locked(self, s: AsyncSession, command_id: int) -> Any:
        row = (await s.execute(select(T).where(T.c.id == command_id).with_for_update())).mappings().first()
        if row is None:
            raise NotFound(f"No command with id {command_id}", type="not-found")
        return row

    def _own_lease(self, row: Any, token: str, verb: str) -> None:
        """409 unless ``row`` is processing under the caller's lease (``token``)."""
        if row["status"] != "processing":
            raise Conflict(
                f"Cannot {verb} command {row['id']}: its status is {row['status']!r}, not 'processing'",
                type="conflict",
                status_now=row["status"],
            )
        if token != row["lease_token"]:
            raise Conflict(
                f"Cannot {verb} command {row['id']}: the lease expired and it was handed to another poller",
                type="lease-lost",
                status_now=row["status"],
            )

    def _bound(self, principal: Principal | None) -> Any:
        """The SQL form of :meth:`may_act`: the systems whose commands ``principal`` may act on."""
        if principal is None:
            return true()
        if principal.systems:
            return T.c.target_system.in_(sorted(principal.systems))
        return true() if principal.has(MANAGE) else false()

    async def extend(
        self,
        command_id: int,
        *,
        token: str,
        lease_seconds: int | None = None,
        principal: Principal | None = None,
    ) -> dict[str, Any]:
        """Heartbeat: push the lease expiry to now + ``lease_seconds``; ``token`` is the poll's lease token."""
        seconds = lease_seconds or self.settings.default_lease_seconds
        async with self.ctx.db.write() as s:
            now = utcnow()
            cond = [T.c.id == command_id, T.c.status == "processing", T.c.lease_token == token, self._bound(principal)]
            row = (
                (
                    await s.execute(
                        update(T)
                        .where(*cond)
                        .values(lease_expires_at=now + timedelta(seconds=seconds), updated_at=now)
                        .returning(*T.c)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                row = await self._locked(s, command_id)
                self._authorize(principal, row)
                self._own_lease(row, token, "extend")
                raise Conflict(f"Cannot extend command {command_id}", type="conflict")  # pragma: no cover
            await record_audit(
                s,
                entity="command",
                entity_id=command_id,
                action="lease_extend",
                change={"expires_at": iso(row["lease_expires_at"])},
                **({"principal": principal} if principal else {"actor": "system:commands"}),
            )
        return command_view(row)

    async def complete(
        self,
        command_id: int,
        result: Any,
        *,
        token: str,
        principal: Principal | None = None,
        origin: Origin | None = None,
    ) -> dict[str, Any]:
        """Mark a leased command completed; ``token`` is the lease token its poll returned.

        Repeating the same call (same result, same token) answers the same 200.

        Completions arriving while a write is in flight are committed together
        (group commit): each is still checked and audited on its own, in
        arrival order, but they share one transaction.
        """
        loop = asyncio.get_running_loop()
        item = _Completion(command_id, result, token, principal, origin, loop.create_future())
        self._completions.append(item)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_completions())
        return await item.future

    async def _flush_completions(self) -> None:
        await asyncio.sleep(0)  # let callbacks of the same loop iteration join the first batch
        while self._completions:
            batch = self._completions[:COMPLETION_BATCH]
            del self._completions[:COMPLETION_BATCH]
            try:
                outcomes = await self._complete_batch(batch)
            except Exception as exc:  # noqa: BLE001 - the whole transaction failed: tell every caller
                outcomes = [exc] * len(batch)
            for item, outcome in zip(batch, outcomes, strict=True):
                if item.future.done():  # the caller went away; the outcome stands
                    continue
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)

    async def _complete_batch(self, batch: list[_Completion]) -> list[Any]:
        """One transaction and four statements, whatever the batch size.

        The rows are read (and locked, on PostgreSQL) at once, each callback is
        decided in arrival order in Python, and the winners are written with one
        executemany UPDATE and one multi-row audit insert.
        """
        outcomes: list[Any] = [None] * len(batch)
        done: list[tuple[dict[str, Any], _Completion]] = []
        async with self.ctx.db.write() as s:
            now = utcnow()
            ids = sorted({item.command_id for item in batch})
            rows = {r["id"]: dict(r) for r in (await s.execute(_COMPLETE_READ, {"ids": ids})).mappings()}
            for i, item in enumerate(batch):
                try:
                    outcomes[i] = self._decide_completion(rows.get(item.command_id), item, now, done)
                except ChronosError as refused:
                    outcomes[i] = refused
            if done:
                await s.execute(
                    _COMPLETE_WRITE, [{"cid": row["id"], "result": item.result, "now": now} for row, item in done]
                )
                await record_audit_many(
                    s,
                    [
                        {
                            "entity": "command",
                            "entity_id": row["id"],
                            "action": "complete",
                            "change": {"status": "completed", "attempts": row["attempts"]},
                            "principal": item.principal,
                            "origin": item.origin,
                        }
                        for row, item in done
                    ],
                )
                await publish(self.ctx, s, [("command.completed", row) for row, _ in done])
            triggers = [(row, item) for row, item in done if row["has_rules"]]
            if triggers and self.workflows is not None:
                rules = await self.workflows.rules_for(s, {row["command"] for row, _ in triggers}, "completed")
                for row, item in triggers:
                    await self.workflows.fire(
                        s, row, "completed", principal=item.principal, origin=item.origin, rules=rules
                    )
        return outcomes

    def _decide_completion(
        self, row: dict[str, Any] | None, item: _Completion, now: datetime, done: list[Any]
    ) -> dict[str, Any]:
        """The answer to one complete call; a winner updates ``row`` in place and joins ``done``."""
        if row is None:
            raise NotFound(f"No command with id {item.command_id}", type="not-found")
        self._authorize(item.principal, row)
        if row["status"] == "processing" and item.token == row["lease_token"]:
            row.update(
                status="completed", result_json=item.result, completed_at=now, updated_at=now, lease_expires_at=None
            )
            done.append((row, item))
            return command_view(row)
        if row["status"] == "completed":
            # A replay must carry the token of the lease that completed the command (it is
            # kept on the row): the worker that did the work gets its answer again, nobody else.
            same = canonical(row["result_json"]) == canonical(item.result)
            if same and item.token == row["lease_token"]:
                return command_view(row)
            raise Conflict(
                f"Command {item.command_id} is already completed with a different result"
                if not same
                else f"Command {item.command_id} was completed under another lease",
                type="conflict",
                status_now="completed",
            )
        self._own_lease(row, item.token, "complete")
        raise Conflict(f"Cannot complete command {item.command_id}", type="conflict")  # pragma: no cover

    def backoff(self, attempts: int) -> float:
        """Exponential backoff with equal jitter: between half and all of base * 2^(attempts-1)."""
        base = self.settings.backoff_base_seconds * (2 ** max(0, min(attempts - 1, 40)))
        delay = min(self.settings.backoff_max_seconds, base)
        return delay / 2 + random.random() * delay / 2

    async def fail(
        self,
        command_id: int,
        error: str,
        *,
        token: str,
        retry: bool = False,
        retry_after_seconds: float | None = None,
        principal: Principal | None = None,
        origin: Origin | None = None,
    ) -> dict[str, Any]:
        """Report a failure: ``retry`` queues it again after a backoff, up to ``max_attempts``.

        ``token`` is the lease token the poll returned; the same report again under the
        same lease answers the same 200.
        """
        async with self.ctx.db.write() as s:
            row = await self._locked(s, command_id)
            self._authorize(principal, row)
            if (
                row["status"] in ("failed", "dead", "pending")
                and row["error"] == error
                and (row["lease_token"] is not None and token == row["lease_token"])
            ):
                return command_view(row)  # the same report again
            self._own_lease(row, token, "fail")
            now = utcnow()
            values: dict[str, Any] = {"error": error, "lease_expires_at": None, "updated_at": now}
            if retry and row["attempts"] < row["max_attempts"]:
                delay = retry_after_seconds if retry_after_seconds is not None else self.backoff(row["attempts"])
                values.update(status="pending", not_before=now + timedelta(seconds=delay))
            else:
                values.update(status="dead" if retry else "failed", completed_at=now)
            new = (
                (await s.execute(update(T).where(T.c.id == command_id).values(**values).returning(*T.c)))
                .mappings()
                .one()
            )
            await record_audit(
                s,
                entity="command",
                entity_id=command_id,
                action="fail",
                change={
                    "status": new["status"],
                    "attempts": new["attempts"],
                    "error": error[:500],
                    "retry": retry,
                    "not_before": iso(new["not_before"]) if new["status"] == "pending" else None,
                },
                principal=principal,
                origin=origin,
            )
            if new["status"] in ("failed", "dead") and self.workflows is not None:
                await self.workflows.fire(s, new, "failed", principal=principal, origin=origin)
            if new["status"] in ("failed", "dead"):
                await publish(self.ctx, s, [(f"command.{new['status']}", new)])
        return command_view(new)

    async def retry(
        self, command_id: int, *, principal: Principal | None = None, origin: Origin | None = None
    ) -> dict[str, Any]:
        """Put a dead, failed or missed command back in the queue with a fresh attempt budget, due now."""
        async with self.ctx.db.write() as s:
            row = await self._locked(s, command_id)
            self._authorize(principal, row)
            if row["status"] not in ("dead", "failed", "missed"):
                raise Conflict(
                    f"Only dead, failed or missed commands can be retried; command {command_id} is {row['status']!r}",
                    type="conflict",
                    status_now=row["status"],
                )
            now = utcnow()
            new = (
                (
                    await s.execute(
                        update(T)
                        .where(T.c.id == command_id)
                        .values(
                            status="pending",
                            attempts=0,
                            not_before=now,
                            lease_token=None,
                            lease_expires_at=None,
                            completed_at=None,
                            updated_at=now,
                        )
                        .returning(*T.c)
                    )
                )
                .mappings()
                .one()
            )
            await record_audit(
                s,
                entity="command",
                entity_id=command_id,
                action="retry",
                change={"status": "pending", "previous_status": row["status"], "previous_attempts": row["attempts"]},
                principal=principal,
                origin=origin,
            )
        return command_view(new)

    async def cancel(
        self,
        command_id: int,
        *,
        reason: str = "cancelled",
        principal: Principal | None = None,
        origin: Origin | None = None,
        actor: str | None = None,
        session: AsyncSession | None = None,
    ) -> dict[str, Any]:
        """Cancel a pending or processing command (a worker's later callback gets 409)."""
        if session is None:
            async with self.ctx.db.write() as s:
                return await self.cancel(
                    command_id, reason=reason, principal=principal, origin=origin, actor=actor, session=s
                )
        s = session
        row = await self._locked(s, command_id)
        self._authorize(principal, row)
        if row["status"] == "cancelled":
            return command_view(row)
        if row["status"] not in ("pending", "processing"):
            raise Conflict(
                f"Command {command_id} is {row['status']!r} and can no longer be cancelled",
                type="conflict",
                status_now=row["status"],
            )
        now = utcnow()
        new = (
            (
                await s.execute(
                    update(T)
                    .where(T.c.id == command_id)
                    .values(status="cancelled", lease_expires_at=None, completed_at=now, updated_at=now, error=reason)
                    .returning(*T.c)
                )
            )
            .mappings()
            .one()
        )
        await record_audit(
            s,
            entity="command",
            entity_id=command_id,
            action="cancel",
            change={"status": "cancelled", "previous_status": row["status"], "reason": reason},
            principal=principal,
            origin=origin,
            actor=actor,
        )
        return command_view(new)

    async def lock_pending(self, s: AsyncSession, system: str, action: str) -> None:
        """Lock the pending commands of (system, action) before its whitelist entry changes.

        The calendar sink, editing an entry's ``ACTION:``, locks the old command (cancel, re-time)
        before it share-locks the whitelist entry for the new one; taking the locks in the same
        order makes a change of the entry wait for such a sync instead of deadlocking with it
        (PostgreSQL; SQLite has a single writer).
        """
        await s.execute(
            select(T.c.id)
            .where(T.c.target_system == system, T.c.command == action, T.c.status == "pending")
            .with_for_update(of=T)
        )

    async def recheck_pending(
        self,
        s: AsyncSession,
        entry: Any,
        *,
        principal: Principal | None = None,
        origin: Origin | None = None,
        actor: str | None = None,
    ) -> list[int]:
        """Cancel the pending commands of ``entry``'s (system, action) that its rules no longer allow
        (params, and the sources and calendars of calendar-created commands).

        Called in the transaction that changes (or creates) a whitelist entry's
        allowed params, so no poll can hand such a command out afterwards. Each
        cancelled command gets the reason as its ``error`` and an audit row.
        Commands already handed out (``processing``) are not touched. Returns
        the ids of the cancelled commands.
        """
        allowed = entry["allowed_params_json"] or {}
        rows = (
            (
                await s.execute(
                    select(T.c.id, T.c.params_json, T.c.origin, T.c.source, T.c.calendar_id)
                    .where(
                        T.c.target_system == entry["system"], T.c.command == entry["action"], T.c.status == "pending"
                    )
                    .order_by(T.c.id)
                    .with_for_update(of=T)
                )
            )
            .mappings()
            .all()
        )
        refused: list[tuple[int, str]] = []
        for row in rows:
            violations = check_params(allowed, row["params_json"] or {})
            if row["origin"] == "calendar":
                violations = check_origin(dict(entry), row["source"], row["calendar_id"]) + violations
            if violations:
                first = violations[0]
                reason = storable_text(
                    f"cancelled: the whitelist entry {entry['system']}/{entry['action']} (id {entry['id']}) "
                    f"no longer allows it: {first.pointer}: {first.detail}"
                )[:1000]
                refused.append((row["id"], reason))
        if not refused:
            return []
        now = utcnow()
        await s.execute(
            update(T)
            .where(T.c.id == bindparam("cid"), T.c.status == "pending")
            .values(
                status="cancelled", error=bindparam("reason"), lease_expires_at=None, completed_at=now, updated_at=now
            ),
            [{"cid": cid, "reason": reason} for cid, reason in refused],
        )
        await record_audit_many(
            s,
            [
                {
                    "entity": "command",
                    "entity_id": cid,
                    "action": "cancel",
                    "change": {
                        "status": "cancelled",
                        "previous_status": "pending",
                        "reason": reason,
                        "whitelist_id": entry["id"],
                    },
                    "principal": principal,
                    "origin": origin,
                    "actor": actor,
                }
                for cid, reason in refused
            ],
        )
        return [cid for cid, _ in refused]

    # -- reading ---------------------------------------------------------------------

    async def list(
        self,
        *,
        status: list[str] | None = None,
        system: str | None = None,
        command: str | None = None,
        origin: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        principal: Principal | None = None,
    ) -> dict[str, Any]:
        """Newest first, keyset-paginated on id; a key bound to systems sees their commands only."""
        q = select(T)
        if system:
            self.authorize_system(principal, system)
        elif principal is not None and principal.systems:
            q = q.where(T.c.target_system.in_(sorted(principal.systems)))
        if status:
            q = q.where(T.c.status.in_(status))
        if system:
            q = q.where(T.c.target_system == system)
        if command:
            q = q.where(T.c.command == command.upper())
        if origin:
            q = q.where(T.c.origin == origin)
        if cursor:
            (last_id,) = decode_cursor("commands", cursor, [int])
            q = q.where(T.c.id < last_id)
        q = q.order_by(T.c.id.desc()).limit(limit + 1)
        async with self.ctx.db.read() as s:
            rows = (await s.execute(q)).mappings().all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "items": [command_view(r) for r in rows],
            "next_cursor": encode_cursor("commands", [rows[-1]["id"]]) if more and rows else None,
        }

    async def get(self, system: str, command_id: int, *, principal: Principal | None = None) -> dict[str, Any]:
        """One command of ``system`` by id: 403 for a key that may not act on ``system``, 404 when no
        command of ``system`` has that id (a command of another system included)."""
        self.authorize_system(principal, system)
        async with self.ctx.db.read() as s:
            row = (
                (await s.execute(select(T).where(T.c.id == command_id, T.c.target_system == system))).mappings().first()
            )
        if row is None:
            raise NotFound(f"No command with id {command_id} for system {system!r}", type="not-found")
        return command_view(row)

    async def system_known(self, system: str) -> bool:
        """A system is known when a whitelist entry or a command names it."""
        async with self.ctx.db.read() as s:
            hit = (await s.execute(select(W.c.id).where(W.c.system == system).limit(1))).first()
            if hit is None:
                hit = (await s.execute(select(T.c.id).where(T.c.target_system == system).limit(1))).first()
        return hit is not None

    async def counts(self) -> dict[str, int]:
        async with self.ctx.db.read() as s:
            rows = (await s.execute(select(T.c.status, func.count()).group_by(T.c.status))).all()
        return {status: n for status, n in rows}
