"""Event operations behind the API: list, create through the pipeline, read, patch, delete."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, cast

from pydantic import ValidationError

from chronos.plugin import (
    ConflictIndex,
    EventAnalytics,
    EventDraft,
    EventIntake,
    EventKey,
    EventStore,
    InvalidInput,
    NotFound,
    Origin,
    PluginContext,
    Principal,
    StoredEvent,
    Unavailable,
    record_audit,
)

from chronos_events.outbox_events import publish_change
from chronos_events.query import (
    EventQuery,
    list_events as run_list,
    list_page_sqlite,
    over_budget,
    statement_budget,
    stored_item,
)
from chronos_events.schemas import EventCreate, EventPatch
from chronos_events.settings import EventsSettings
from chronos_events.source import LOCAL_SOURCE
from chronos_events.state import inline_reader
from chronos_events.store import PATCHABLE, SqlEventStore, UnknownSubTask

#: Fields a PATCH may set to null.
NULLABLE = {"start_date", "end_date", "timezone", "mode"}


def event_store(ctx: PluginContext) -> SqlEventStore:
    return cast(SqlEventStore, ctx.service(EventStore))


def invalid(detail: str, pointer: str, problem: str) -> InvalidInput:
    """A 422 for one bad body field."""
    return InvalidInput(
        detail,
        type="validation",
        errors=[{"pointer": pointer, "location": "body", "detail": problem, "type": "value_error"}],
    )


def invalid_query(name: str, problem: str) -> InvalidInput:
    """A 422 for one bad query parameter."""
    return InvalidInput(
        f"The request is invalid: /query/{name}: {problem}",
        type="validation",
        errors=[{"pointer": f"/query/{name}", "location": "query", "detail": problem, "type": "value_error"}],
    )


def validation_error(exc: ValidationError, prefix: str = "") -> InvalidInput:
    """A pydantic error as a 422 with a pointer per error (under ``prefix``)."""
    errors = [
        {
            "pointer": prefix + "".join(f"/{p}" for p in err["loc"]),
            "location": "body",
            "detail": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors()
    ]
    summary = "; ".join(f"{e['pointer'] or '/'}: {e['detail']}" for e in errors[:5])
    return InvalidInput(f"The request is invalid: {summary}", type="validation", errors=errors)


async def event_row(session: Any, store: SqlEventStore, event_id: int) -> Any:
    """The stored row of ``event_id``; :class:`NotFound` if there is none."""
    row = await store.row(session, event_id)
    if row is None:
        raise NotFound(f"No event with id {event_id}", type="not-found")
    return row


# -- list ---------------------------------------------------------------------------


async def list_events(
    ctx: PluginContext, q: EventQuery, *, analytics: bool, conflicts: bool = False
) -> bytes | dict[str, Any]:
    """One page of ``GET /api/v1/events``: the ready JSON bytes (SQLite, no analytics) or the body.

    ``conflicts`` adds each item's ``conflicts`` (the ids of the events it
    conflicts with) from the :class:`ConflictIndex` service (the planning
    plugin); without one it is a 422.

    Analytics and text searches are bounded: a window of at most
    ``events.query_max_window_days`` (an open side is closed that far from the
    other; a longer window given is a 422) and ``events.query_timeout_ms`` of
    database time (503 saying what to narrow).
    """
    settings = ctx.section(EventsSettings)
    budget = settings.query_timeout_ms if (analytics or q.text) else None
    if budget is not None:
        q.max_window = timedelta(days=settings.query_max_window_days)
        if q.window_too_long():
            raise InvalidInput(
                f"Analytics and text search take a window of at most {settings.query_max_window_days} days"
                " (events.query_max_window_days): narrow `from`/`to`",
                type="validation",
                errors=[
                    {
                        "pointer": "/query/to",
                        "location": "query",
                        "detail": f"at most {settings.query_max_window_days} days after `from` with analytics or text",
                        "type": "value_error",
                    }
                ],
            )
    if conflicts and not ctx.has_service(ConflictIndex):
        raise invalid_query("include", "conflicts need the planning plugin, which is not enabled")
    try:
        if ctx.db.is_sqlite and not analytics and not conflicts:
            return await list_page_sqlite(ctx.db.reader, q, inline_reader(ctx), budget)
        provider = ctx.service(EventAnalytics) if analytics and ctx.has_service(EventAnalytics) else None
        async with ctx.db.read() as s:
            if budget is None:
                body = await run_list(s, ctx.db.dialect, q, analytics=analytics, provider=provider)
            else:
                async with statement_budget(s, budget):
                    body = await run_list(s, ctx.db.dialect, q, analytics=analytics, provider=provider)
            if conflicts:
                found = await ctx.service(ConflictIndex).conflicting_ids(s, [i["id"] for i in body["items"]])
                for item in body["items"]:
                    item["conflicts"] = found.get(item["id"], [])
            return body
    except Exception as exc:
        if budget is None or not over_budget(exc):
            raise
        raise Unavailable(
            f"The query did not finish within {budget} ms (events.query_timeout_ms): narrow the window"
            " (`from`/`to`), name calendars (`calendar_id`) or tags, or search for a rarer word",
            type="query-budget-exceeded",
        ) from None


# -- create through the pipeline --------------------------------------------------------------


@dataclass
class Created:
    """The outcome of a creation: status, body and headers of the answer."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _local_calendar(settings: EventsSettings, calendar_id: str | None) -> str:
    calendar_id = calendar_id or settings.local_calendars[0]
    if calendar_id not in settings.local_calendars:
        raise invalid(
            f"Calendar {calendar_id!r} is not a local (writable) calendar; local calendars: {settings.local_calendars}",
            "/calendar_id",
            "not a local calendar",
        )
    return calendar_id


def _check_span(body: EventCreate) -> None:
    if body.end is None:
        return
    if isinstance(body.start, datetime) != isinstance(body.end, datetime):
        raise invalid("start and end must both be datetimes or both be dates", "/end", "type differs from start")
    if body.end <= body.start:  # both datetimes or both dates (checked above)
        raise invalid("end must be after start", "/end", "must be after start")


def _intake(ctx: PluginContext) -> EventIntake:
    try:
        return ctx.service(EventIntake)
    except LookupError:
        raise Unavailable(
            "The sync pipeline is unavailable, so events cannot be created", type="pipeline-unavailable"
        ) from None


def idempotent_uid(key_id: str, idempotency_key: str) -> str:
    """The uid a request with this Idempotency-Key creates (the same for every retry)."""
    digest = hashlib.sha256(f"{key_id}\x00{idempotency_key}".encode()).hexdigest()[:32]
    return f"api-{digest}@chronos"


def _draft(body: EventCreate, uid: str, calendar_id: str) -> EventDraft:
    return EventDraft(
        uid=uid,
        start=body.start,
        end=body.end,
        title=body.title,
        description=body.description,
        location=body.location,
        timezone=body.timezone,
        status=body.status,
        transparency=body.transparency,
        mode=body.mode,
        tags=list(body.tags),
        metadata=dict(body.metadata),
        source=LOCAL_SOURCE,
        calendar_id=calendar_id,
    )


async def _stored_by_uid(ctx: PluginContext, store: SqlEventStore, calendar_id: str, uid: str) -> StoredEvent | None:
    async with ctx.db.read() as s:
        return await store.get_by_key(s, EventKey(LOCAL_SOURCE, calendar_id, uid, ""))


async def _item(ctx: PluginContext, store: SqlEventStore, event_id: int) -> dict[str, Any]:
    async with ctx.db.read() as s:
        return stored_item(await event_row(s, store, event_id))


async def create_event(
    ctx: PluginContext, body: EventCreate, *, principal: Principal, idempotency_key: str | None
) -> Created:
    """Run a new local event through the pipeline.

    A retry with the same Idempotency-Key maps onto the same source key: the
    pipeline sees an unchanged entry (or a tombstone, if it was consumed), and
    an event created before is answered with 200.
    """
    calendar_id = _local_calendar(ctx.section(EventsSettings), body.calendar_id)
    _check_span(body)
    intake = _intake(ctx)
    store = event_store(ctx)
    if idempotency_key:
        uid = idempotent_uid(principal.key_id, idempotency_key)
        existing = await _stored_by_uid(ctx, store, calendar_id, uid)
        if existing is not None:
            return Created(200, await _item(ctx, store, existing.id), {"Idempotent-Replayed": "true"})
    else:
        uid = f"api-{uuid.uuid4().hex}@chronos"
    stored = await intake.ingest(
        LOCAL_SOURCE, calendar_id, [_draft(body, uid, calendar_id)], actor=principal.key_id, principal=principal
    )
    if not stored:
        again = await _stored_by_uid(ctx, store, calendar_id, uid)
        if again is None:
            # Consumed by a sink (an ``ACTION:`` entry became a command) or rejected.
            return Created(202, {"status": "consumed", "source": LOCAL_SOURCE, "calendar_id": calendar_id, "uid": uid})
        stored = [again]
    item = await _item(ctx, store, stored[0].id)
    return Created(201, item, {"Location": f"/api/v1/events/{item['id']}"})


# -- one event ----------------------------------------------------------------------------


async def get_event(ctx: PluginContext, event_id: int) -> dict[str, Any]:
    return await _item(ctx, event_store(ctx), event_id)


def _reject_nulls(body: EventPatch) -> None:
    for name in body.model_fields_set:
        if getattr(body, name) is None and name not in NULLABLE:
            raise invalid(f"{name} cannot be null", f"/{name}", "must not be null")


def _all_day_instants(fields: dict[str, Any], row: Any) -> None:
    """All-day events span whole UTC days: derive the instants from changed dates."""
    all_day = fields.get("all_day", row._mapping["all_day"])
    if not all_day or not ("start_date" in fields or "end_date" in fields):
        return
    if "start_date" in fields and fields["start_date"] is not None and "start_utc" not in fields:
        fields["start_utc"] = datetime.combine(fields["start_date"], time(), UTC)
    if "end_date" in fields and fields["end_date"] is not None and "end_utc" not in fields:
        fields["end_utc"] = datetime.combine(fields["end_date"], time(), UTC)


async def _apply_patch(s: Any, store: SqlEventStore, row: Any, body: EventPatch, fields: dict[str, Any]) -> None:
    done = {item.id: item.done for item in body.sub_tasks or []}
    try:
        await store.patch(s, row, fields=fields, sub_tasks_done=done, metadata=body.metadata)
    except ValidationError as exc:
        raise InvalidInput(
            "The change would make the event invalid: " + "; ".join(e["msg"] for e in exc.errors()[:3]),
            type="validation",
            errors=[
                {
                    "pointer": "/" + "/".join(map(str, e["loc"])) if e["loc"] else "",
                    "location": "body",
                    "detail": e["msg"],
                    "type": e["type"],
                }
                for e in exc.errors()
            ],
        ) from None
    except UnknownSubTask as exc:
        # Checked against the sub-tasks after the edit (a new description has new ones).
        i = next(i for i, item in enumerate(body.sub_tasks or []) if item.id == exc.task_id)
        raise invalid(f"The event has no sub-task {exc.task_id!r}", f"/sub_tasks/{i}/id", "unknown sub-task") from None


async def patch_event(
    ctx: PluginContext, event_id: int, body: EventPatch, *, principal: Principal, origin: Origin | None
) -> dict[str, Any]:
    """Apply a local edit and audit it; returns the changed event."""
    _reject_nulls(body)
    fields = {k: getattr(body, k) for k in body.model_fields_set if k in PATCHABLE and k != "sub_tasks"}
    store = event_store(ctx)
    async with ctx.db.write() as s:
        row = await event_row(s, store, event_id)
        _all_day_instants(fields, row)
        await _apply_patch(s, store, row, body, fields)
        if ctx.has_service(ConflictIndex):
            # A local edit does not pass the pipeline's sinks: conflicts follow it here.
            await ctx.service(ConflictIndex).refresh(s, [event_id])
        change = body.model_dump(mode="json", exclude_unset=True)
        await record_audit(
            s, entity="event", action="update", entity_id=event_id, change=change, principal=principal, origin=origin
        )
        new_row = await store.row(s, event_id)
        await publish_change(ctx, s, "event.updated", new_row)
    return stored_item(new_row)


async def delete_event(
    ctx: PluginContext, event_id: int, *, tombstone: bool | None, principal: Principal, origin: Origin | None
) -> None:
    """Delete a stored event (and its links); synced events leave a tombstone by default."""
    store = event_store(ctx)
    async with ctx.db.write() as s:
        row = await event_row(s, store, event_id)
        hide = tombstone if tombstone is not None else row.source != LOCAL_SOURCE
        await store.remove(s, event_id, tombstone=hide, reason="deleted through the API")
        await record_audit(
            s,
            entity="event",
            action="delete",
            entity_id=event_id,
            change={
                "source": row.source,
                "calendar_id": row.calendar_id,
                "uid": row.uid,
                "recurrence_id": row.recurrence_id,
                "title": row.title,
                "tombstone": hide,
            },
            principal=principal,
            origin=origin,
        )
        await publish_change(ctx, s, "event.deleted", row)
