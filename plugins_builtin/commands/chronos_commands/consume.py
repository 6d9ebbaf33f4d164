"""Calendar entries in; notes, links and commands out.

Two pipeline stages and a job:

* :class:`CommandHints` (an enricher) writes ``command_hint`` into the
  metadata of entries that look like commands but are not taken — a near miss
  in the syntax, an invalid ``ACTION:`` or ``URL:``, or an ``ACTION:`` the
  whitelist refuses — so the reason is visible through the event API.
* :class:`CommandEntries` (a sink) consumes what is valid, in the batch's
  transaction: it stores the note, link or command, then removes the entry
  from the event store (with a local tombstone when the source is read-only)
  and queues its deletion at a source that can write. Consumption is
  idempotent: the command's idempotency key comes from (source, uid,
  recurrence id, normalised action text), so a re-sync never creates a second
  command. It is also edit-aware: a scheduled ``ACTION:`` (whitelist
  ``schedule: event_start``, start in the future) keeps its entry while the
  command is pending, so moving the entry re-times the command and deleting
  or cancelling it cancels the command, audited.

  An ``ACTION:`` created through the API (the batch carries the caller's
  ``principal``) becomes a command only when that key could queue it
  directly (``commands.manage``, or bound to the target system); otherwise
  the event is kept with a ``command_hint`` saying so. Audit rows name the
  key, or for synced entries the calendar (``source:<source>/<calendar>``).
* The job ``commands.calendar`` consumes the kept entries of commands that
  were handed out and deletes consumed entries at their sources, retrying
  failures with a backoff.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    Enricher,
    EventIntake,
    EventKey,
    EventStore,
    PluginContext,
    Sink,
    SinkBatch,
    StoredEvent,
    one_of,
    record_audit,
    utcnow,
)

from chronos_commands.models import ExternalCommand, Link, Note, SourceDeletion
from chronos_commands.queue import CommandQueue, NewCommand, Rejected, iso
from chronos_commands.syntax import ActionEntry, Entry, LinkEntry, NoteEntry, NotTaken, parse_entry
from chronos_commands.whitelist import storable_text

T = ExternalCommand.__table__
NOTES = Note.__table__
LINKS = Link.__table__
DELETIONS = SourceDeletion.__table__
ACTOR = "system:calendar"


def batch_actor(batch: SinkBatch) -> dict[str, Any]:
    """Who caused what a batch does, for the audit log: the API key that created the events,
    or the calendar that delivered them (``source:<source>/<calendar_id>``)."""
    if batch.principal is not None:
        return {"principal": batch.principal}
    return {"actor": f"source:{batch.source}/{batch.calendar_id}"}


def created_by(batch: SinkBatch) -> str:
    """The ``created_by`` of a command an entry of ``batch`` creates (the key id, or the calendar)."""
    who = batch_actor(batch)
    return who["principal"].key_id if "principal" in who else who["actor"]


def consumption_key(source: str, uid: str, recurrence_id: str, text: str) -> str:
    """The identity of one consumed entry: (source, uid, recurrence id, normalised text)."""
    raw = "\x1f".join((source, uid, recurrence_id or "", text))
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def normalized_text(entry: NoteEntry | LinkEntry | ActionEntry) -> str:
    if isinstance(entry, ActionEntry):
        return entry.normalized
    if isinstance(entry, LinkEntry):
        return "URL: " + " ".join([entry.url, *entry.title.split()])
    return "NOTE: " + " ".join(entry.content.split())


def _action_command(entry: ActionEntry, event: Any, key: str) -> NewCommand:
    return NewCommand(
        target_system=entry.target,
        command=entry.command,
        params=dict(entry.params),
        args=list(entry.args),
        idempotency_key=f"cal:{key}",
        origin="calendar",
        source=event.source,
        calendar_id=event.calendar_id,
        source_uid=event.uid,
        recurrence_id=event.recurrence_id,
        event_start=event.start_utc,
        created_by=ACTOR,
    )


class _Rows:
    """The pending commands of one key: prefetched, or (a key seen twice in one batch) read again."""

    def __init__(self, sink: CommandEntries, key: EventKey, rows: list[Any] | None) -> None:
        self.sink, self.key, self.rows = sink, key, rows

    def __bool__(self) -> bool:
        return self.rows is None or bool(self.rows)

    async def resolve(self, s: AsyncSession) -> list[Any]:
        return self.rows if self.rows is not None else await self.sink._pending(s, self.key)


class PendingByKey:
    """Pending calendar commands prefetched for a batch's keys.

    Each key's rows are handed out once: what the sink does for that key may change them, so a
    key that comes again in the same batch is read afresh."""

    def __init__(self, sink: CommandEntries, keys: set[EventKey], found: dict[EventKey, list[Any]]) -> None:
        self.sink, self.fresh, self.found = sink, keys, found

    def take(self, key: EventKey) -> _Rows:
        if key in self.fresh:
            self.fresh.discard(key)
            return _Rows(self.sink, key, self.found.pop(key, []))
        return _Rows(self.sink, key, None)


class CommandHints(Enricher):
    """Explains in ``metadata.command_hint`` why an entry that looks like a command is not taken."""

    name = "commands.hints"
    order = 900

    def __init__(self, queue: CommandQueue) -> None:
        self.queue = queue

    async def enrich(self, events: list[Any], session: AsyncSession, ctx: PluginContext) -> None:
        if not self.queue.settings.calendar.enabled:
            return
        entries: dict[tuple[str, str], dict[str, Any] | None] = {}
        for event in events:
            entry = parse_entry(event.title, event.description)
            hint = entry.hint() if isinstance(entry, NotTaken) else None
            if isinstance(entry, ActionEntry):
                new = _action_command(entry, event, "probe")
                try:
                    await self.queue.check(session, new, cache=entries)
                except Rejected as exc:
                    # The reason may quote a refused key (a NUL byte in a description's JSON): escaped,
                    # so that the hint can be stored on every backend.
                    hint = {
                        "status": "rejected",
                        "kind": "action",
                        "reason": storable_text(f"refused by the whitelist: {exc}"),
                    }
            if hint is None:
                event.metadata.pop("command_hint", None)
            else:
                event.metadata["command_hint"] = hint


class CommandEntries(Sink):
    """Consumes stored NOTIZ:/NOTE:/URL:/ACTION: entries and keeps scheduled commands in step with edits."""

    name = "commands.entries"
    order = 500

    def __init__(self, queue: CommandQueue) -> None:
        self.queue = queue

    async def write(self, batch: SinkBatch, session: AsyncSession, ctx: PluginContext) -> None:
        if not self.queue.settings.calendar.enabled:
            return
        changed = [
            (stored, stored.event.key, parse_entry(stored.event.title, stored.event.description))
            for stored in (*batch.added, *batch.updated)
        ]
        # One query for the pending commands of every key in the batch: an entry
        # without command syntax whose key has no pending command costs nothing more.
        pending = await self._pending_many(
            session, [key for _, key, _ in changed] + [stored.event.key for stored in batch.deleted]
        )
        if not pending.found and all(entry is None for _, _, entry in changed):
            return  # no command syntax and nothing pending: the usual batch
        store: EventStore | None = None
        rules: dict[tuple[str, str], Any] = {}
        for stored, key, entry in changed:
            rows = pending.take(key)
            if entry is None and not rows:
                continue
            if store is None:
                store = ctx.service(EventStore)
            await self._changed(session, store, batch, stored, entry, await rows.resolve(session), rules)
        for stored in batch.deleted:
            for row in await pending.take(stored.event.key).resolve(session):
                await self._cancel(session, batch, row["id"], "the calendar entry was deleted")

    async def _pending_many(self, s: AsyncSession, keys: list[EventKey]) -> PendingByKey:
        """The pending calendar commands of ``keys``: one query per calendar for the whole batch."""
        found: dict[EventKey, list[Any]] = {}
        by_calendar: dict[tuple[str, str], set[str]] = {}
        for key in keys:
            by_calendar.setdefault((key.source, key.calendar_id), set()).add(key.uid)
        dialect = s.get_bind().dialect.name
        for (source, calendar_id), uids in by_calendar.items():
            rows = await s.execute(
                select(T)
                .where(
                    T.c.source == source,
                    one_of(T.c.source_uid, sorted(uids), dialect),
                    T.c.calendar_id == calendar_id,
                    T.c.origin == "calendar",
                    T.c.status == "pending",
                )
                .order_by(T.c.id)
            )
            for row in rows.mappings():
                key = EventKey(row["source"], row["calendar_id"], row["source_uid"], row["recurrence_id"])
                found.setdefault(key, []).append(row)
        return PendingByKey(self, set(keys), found)

    async def _cancel(
        self,
        s: AsyncSession,
        batch: SinkBatch,
        command_id: int,
        reason: str,
        store: EventStore | None = None,
        stored: StoredEvent | None = None,
    ) -> None:
        """Cancel because of an edit; the entry no longer waits for this command.

        An entry that stays in the calendar says so in its metadata, replacing
        the "scheduled" note it carried."""
        await self.queue.cancel(command_id, reason=reason, session=s, **batch_actor(batch))
        await s.execute(update(T).where(T.c.id == command_id).values(entry_kept=False))
        if store is not None and stored is not None:
            await store.update_metadata(
                s,
                stored.id,
                {
                    "command": {
                        "id": command_id,
                        "status": "cancelled",
                        "reason": reason,
                    }
                },
            )

    async def _pending(self, s: AsyncSession, key: EventKey) -> list[Any]:
        return list(
            (
                await s.execute(
                    select(T).where(
                        T.c.source == key.source,
                        T.c.source_uid == key.uid,
                        T.c.calendar_id == key.calendar_id,
                        T.c.recurrence_id == key.recurrence_id,
                        T.c.origin == "calendar",
                        T.c.status == "pending",
                    )
                )
            )
            .mappings()
            .all()
        )

    async def _changed(
        self,
        s: AsyncSession,
        store: EventStore,
        batch: SinkBatch,
        stored: StoredEvent,
        entry: Entry | None,
        pending: list[Any],
        rules: dict[tuple[str, str], Any],
    ) -> None:
        event = stored.event
        if isinstance(entry, ActionEntry):
            await self._action(s, store, batch, stored, entry, pending, rules)
            return
        for row in pending:
            await self._cancel(s, batch, row["id"], "the calendar entry no longer holds this ACTION", store, stored)
        if isinstance(entry, (NoteEntry, LinkEntry)):
            await self._note_or_link(s, store, batch, stored, entry)
        elif isinstance(entry, NotTaken) and entry.status == "rejected":
            await record_audit(
                s,
                entity="event",
                entity_id=stored.id,
                action="command_rejected",
                change={"title": event.title[:500], "kind": entry.kind, "reason": entry.reason},
                **batch_actor(batch),
            )

    async def _note_or_link(
        self, s: AsyncSession, store: EventStore, batch: SinkBatch, stored: StoredEvent, entry: NoteEntry | LinkEntry
    ) -> None:
        event = stored.event
        key = consumption_key(event.source, event.uid, event.recurrence_id, normalized_text(entry))
        table = NOTES if isinstance(entry, NoteEntry) else LINKS
        exists = (await s.execute(select(table.c.id).where(table.c.consumption_key == key))).first()
        if exists is None:
            common = dict(
                description=entry.description,
                timestamp=event.start_utc,
                calendar_id=event.calendar_id,
                source=event.source,
                source_uid=event.uid,
                recurrence_id=event.recurrence_id,
                event_id=stored.id,
                consumption_key=key,
                created_at=utcnow(),
            )
            if isinstance(entry, NoteEntry):
                values = {"content": entry.content, **common}
            else:
                values = {"url": entry.url, "title": entry.title, **common}
            new_id = (await s.execute(insert(table).values(**values).returning(table.c.id))).scalar_one()
            kind = "note" if isinstance(entry, NoteEntry) else "link"
            await record_audit(
                s,
                entity=kind,
                entity_id=new_id,
                action="create",
                change={
                    "event_id": stored.id,
                    "source": event.source,
                    "uid": event.uid,
                    **({"url": entry.url} if isinstance(entry, LinkEntry) else {}),
                },
                **batch_actor(batch),
            )
        await self._consume(s, store, batch.source, batch.calendar_id, stored, "consumed as a note or link")

    async def _action(
        self,
        s: AsyncSession,
        store: EventStore,
        batch: SinkBatch,
        stored: StoredEvent,
        entry: ActionEntry,
        pending: list[Any],
        rules: dict[tuple[str, str], Any],
    ) -> None:
        event = stored.event
        key = consumption_key(event.source, event.uid, event.recurrence_id, entry.normalized)
        new = _action_command(entry, event, key)
        new.event_id = stored.id
        for row in pending:
            if row["idempotency_key"] != new.idempotency_key:
                await self._cancel(s, batch, row["id"], "the calendar entry changed", store, stored)
        existing = await self.queue.find_by_key(s, new.idempotency_key)
        if event.status == "cancelled":
            if existing is not None and existing["status"] == "pending":
                await self._cancel(s, batch, existing["id"], "the calendar entry was cancelled", store, stored)
            return
        if not self.queue.may_act(batch.principal, new.target_system):
            await self._not_permitted(s, store, batch, stored, new)
            return
        try:
            # The insert below relies on this entry; the share lock, once taken, lasts for the batch.
            rule = await self.queue.check(s, new, lock=True, cache=rules)
        except Rejected as exc:
            await record_audit(
                s,
                entity="event",
                entity_id=stored.id,
                action="command_rejected",
                change={"title": event.title[:500], "kind": "action", "reason": storable_text(str(exc))[:1000]},
                **batch_actor(batch),
            )
            return
        now = utcnow()
        scheduled = rule["schedule"] == "event_start" and event.start_utc > now
        not_before = event.start_utc if scheduled else now
        if existing is None:
            new.not_before, new.entry_kept = not_before, scheduled
            new.created_by = created_by(batch)
            row, _ = await self.queue.insert(s, new, entry=rule, **batch_actor(batch))
        else:
            row = await self._retime(s, batch, existing, rule, stored, not_before, scheduled, now)
        if scheduled and row["status"] == "pending":
            await store.update_metadata(
                s,
                stored.id,
                {
                    "command": {
                        "id": row["id"],
                        "status": "scheduled",
                        "not_before": iso(row["not_before"]),
                    }
                },
            )
            return
        if row["entry_kept"]:
            await s.execute(update(T).where(T.c.id == row["id"]).values(entry_kept=False))
        await self._consume(s, store, batch.source, batch.calendar_id, stored, f"consumed by command {row['id']}")

    async def _not_permitted(
        self, s: AsyncSession, store: EventStore, batch: SinkBatch, stored: StoredEvent, new: NewCommand
    ) -> None:
        """An ``ACTION:`` created through the API by a key that could not queue the command itself:
        the event is kept, says why in ``command_hint`` and the refusal is audited under the key."""
        principal = batch.principal
        assert principal is not None
        system = new.target_system
        reason = storable_text(
            f"not permitted: the key {principal.name!r} may not queue commands for {system!r}"
            f" (it needs the scope commands.manage or to be bound to {system!r})"
        )
        hint = {"status": "rejected", "kind": "action", "reason": reason}
        await store.update_metadata(s, stored.id, {"command_hint": hint})
        await record_audit(
            s,
            entity="event",
            entity_id=stored.id,
            action="command_rejected",
            change={"title": stored.event.title[:500], "kind": "action", "reason": reason[:1000]},
            principal=principal,
        )

    async def _retime(
        self,
        s: AsyncSession,
        batch: SinkBatch,
        existing: Any,
        rule: dict[str, Any],
        stored: StoredEvent,
        not_before: datetime,
        scheduled: bool,
        now: datetime,
    ) -> Any:
        """A pending scheduled command follows its entry's new start; anything else stays as it is."""
        event = stored.event
        if not (
            existing["status"] == "pending"
            and rule["schedule"] == "event_start"
            and (existing["not_before"] != not_before or existing["event_start"] != event.start_utc)
        ):
            return existing
        row = (
            (
                await s.execute(
                    update(T)
                    .where(T.c.id == existing["id"])
                    .values(
                        not_before=not_before,
                        event_start=event.start_utc,
                        event_id=stored.id,
                        entry_kept=scheduled,
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
            entity_id=existing["id"],
            action="retime",
            **batch_actor(batch),
            change={"not_before": {"from": iso(existing["not_before"]), "to": iso(not_before)}, "event_id": stored.id},
        )
        return row

    async def _consume(
        self, s: AsyncSession, store: EventStore, source: str, calendar_id: str, stored: StoredEvent, reason: str
    ) -> None:
        await consume_entry(
            self.queue, s, store, source, calendar_id, stored.id, reason, actor=f"source:{source}/{calendar_id}"
        )


async def consume_entry(
    queue: CommandQueue,
    s: AsyncSession,
    store: EventStore,
    source: str,
    calendar_id: str,
    event_id: int,
    reason: str,
    *,
    actor: str = ACTOR,
) -> None:
    """Remove a consumed entry: a tombstone for read-only sources, a queued deletion for writable ones.

    The consumption is audited with ``actor`` (who caused it)."""
    stored = await store.get(s, event_id)
    if stored is None:
        return
    # A calendar configured read-only is never written, whatever its source could do.
    writable = bool(
        queue.ctx.service(EventIntake).deletes_at_source(source, calendar_id)
        and queue.settings.calendar.delete_at_source
    )
    # Until the source has deleted it, a writable source may deliver the entry again;
    # consuming it once more is idempotent and queues the same deletion.
    await store.remove(s, event_id, tombstone=not writable, reason=reason[:200])
    await record_audit(
        s,
        entity="event",
        entity_id=event_id,
        action="consume",
        change={"source": source, "calendar_id": calendar_id, "reason": reason[:200], "delete_at_source": writable},
        actor=actor,
    )
    if writable:
        key = stored.event.key
        hit = (
            await s.execute(
                select(DELETIONS.c.id).where(
                    DELETIONS.c.source == key.source,
                    DELETIONS.c.calendar_id == key.calendar_id,
                    DELETIONS.c.uid == key.uid,
                    DELETIONS.c.recurrence_id == key.recurrence_id,
                )
            )
        ).first()
        if hit is None:
            await s.execute(
                insert(DELETIONS).values(
                    source=key.source,
                    calendar_id=key.calendar_id,
                    uid=key.uid,
                    recurrence_id=key.recurrence_id,
                    reason=reason[:200],
                    attempts=0,
                    next_attempt_at=utcnow(),
                    created_at=utcnow(),
                )
            )


async def calendar_upkeep(queue: CommandQueue, *, limit: int = 100) -> dict[str, int]:
    """Consume kept entries of commands that left ``pending``; delete consumed entries at their sources."""
    ctx = queue.ctx
    released = deleted = failed = 0
    if ctx.has_service(EventStore):
        store = ctx.service(EventStore)
        async with ctx.db.write() as s:
            rows = (
                await s.execute(
                    select(T.c.id, T.c.event_id, T.c.source, T.c.calendar_id)
                    .where(T.c.entry_kept.is_(True), T.c.status != "pending")
                    .limit(limit)
                )
            ).all()
            for row in rows:
                if row.event_id is not None:
                    await consume_entry(
                        queue, s, store, row.source, row.calendar_id, row.event_id, f"consumed by command {row.id}"
                    )
                await s.execute(update(T).where(T.c.id == row.id).values(entry_kept=False))
                released += 1
    async with ctx.db.read() as s:
        due = (
            (
                await s.execute(
                    select(DELETIONS)
                    .where(DELETIONS.c.next_attempt_at <= utcnow())
                    .order_by(DELETIONS.c.id)
                    .limit(limit)
                )
            )
            .mappings()
            .all()
        )
    for item in due:
        error = None
        try:
            # Network I/O happens outside any write transaction.
            await ctx.service(EventIntake).delete_at_source(
                item["source"], item["calendar_id"], item["uid"], item["recurrence_id"]
            )
        except LookupError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure is retried later
            error = f"{type(exc).__name__}: {exc}"[:1000]
        async with ctx.db.write() as s:
            if error is None:
                await s.execute(delete(DELETIONS).where(DELETIONS.c.id == item["id"]))
                await record_audit(
                    s,
                    entity="event_source",
                    entity_id=item["uid"][:128],
                    action="delete_at_source",
                    actor=ACTOR,
                    change={
                        "source": item["source"],
                        "calendar_id": item["calendar_id"],
                        "recurrence_id": item["recurrence_id"],
                    },
                )
                deleted += 1
            else:
                attempts = item["attempts"] + 1
                delay = min(6 * 3600, 30 * 2 ** min(attempts, 10))
                await s.execute(
                    update(DELETIONS)
                    .where(DELETIONS.c.id == item["id"])
                    .values(attempts=attempts, last_error=error, next_attempt_at=utcnow() + timedelta(seconds=delay))
                )
                failed += 1
    return {"released": released, "deleted_at_source": deleted, "delete_failures": failed}
