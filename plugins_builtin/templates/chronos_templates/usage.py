"""Using templates: ``POST /templates/{id}/use`` (a usage row, and an event for
event templates) and the test send of an email template."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    Conflict,
    EventDraft,
    EventIntake,
    EventStore,
    InvalidInput,
    MailQueue,
    Origin,
    OutgoingMail,
    PluginContext,
    Principal,
    TemplateNotFound,
    Unavailable,
    record_audit,
    request_fingerprint,
    utcnow,
)

from chronos_templates.models import Template, TemplateUsage
from chronos_templates.schemas import TestSendIn, UseIn, UseOut
from chronos_templates.service import get_service, load_template
from chronos_templates.settings import TemplatesSettings


@dataclass(frozen=True)
class Answer:
    """A use case's JSON answer; ``replayed`` when it repeats an earlier request's (Idempotency-Key)."""

    body: dict[str, Any]
    replayed: bool = False


# -- use -----------------------------------------------------------------------------------------


def _window(body: UseIn, output: dict[str, Any]) -> tuple[Any, Any, str | None]:
    minutes = output["duration_minutes"]
    zone = body.timezone or output.get("timezone")
    if body.start is not None:
        start = body.start.astimezone(UTC)
        return start, start + timedelta(minutes=minutes), zone
    if body.date is not None:
        if output.get("time_of_day"):
            hh, mm = (int(x) for x in output["time_of_day"].split(":"))
            local = datetime.combine(body.date, time(hh, mm), ZoneInfo(zone or "UTC"))
            start = local.astimezone(UTC)
            return start, start + timedelta(minutes=minutes), zone
        days = max(1, minutes // (24 * 60))
        return body.date, body.date + timedelta(days=days), zone
    raise InvalidInput(
        "Give start (with an offset) or date to place the event",
        errors=[{"pointer": "/start", "detail": "start or date is required for an event template"}],
    )


def event_window(body: UseIn, output: dict[str, Any]) -> tuple[Any, Any, str | None]:
    """(start, end, timezone) for an event template's use: datetimes, or dates when all-day."""
    try:
        return _window(body, output)
    except OverflowError:
        raise InvalidInput(
            "The event would end after the year 9999",
            errors=[{"pointer": "/start" if body.start else "/date", "detail": "too late"}],
        ) from None


def _event_view(stored: Any) -> dict[str, Any]:
    return {
        "id": stored.id,
        **stored.event.model_dump(mode="json"),
        "created_at": stored.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "updated_at": stored.updated_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def _event_draft(
    ctx: PluginContext, tpl: Template, body: UseIn, output: dict[str, Any], scoped: str | None
) -> EventDraft:
    """The event an event template's use creates."""
    # The kernel always offers the intake; events are only stored when a
    # plugin (normally `events`) provides the event store.
    if not (ctx.has_service(EventIntake) and ctx.has_service(EventStore)):
        raise Unavailable(
            "Event templates need the events plugin, which is not enabled", type="plugin-not-enabled", plugin="events"
        )
    start, end, zone = event_window(body, output)
    description = output["description"]
    if output["subtasks"]:
        checklist = "\n".join(f"[ ] {t}" for t in output["subtasks"])
        description = f"{description.rstrip()}\n\n{checklist}" if description.strip() else checklist
    # A retried request (same Idempotency-Key) yields the same uid, so the
    # store updates the first event instead of adding a second one.
    seed = scoped or uuid.uuid4().hex
    uid = f"template-{tpl.id}-{hashlib.sha256(seed.encode()).hexdigest()[:24]}"
    return EventDraft(
        uid=uid,
        start=start,
        end=end,
        title=output["title"],
        description=description,
        timezone=zone,
        tags=output["tags"],
        metadata={"template_id": tpl.id, "template_name": tpl.name},
    )


@dataclass(frozen=True)
class _Use:
    """What one use records: the rendered template and, for an event template, the event to create."""

    tpl: Template
    body: UseIn
    output: dict[str, Any]
    draft: EventDraft | None
    calendar: str | None
    scoped: str | None
    fingerprint: str


async def _record_use(
    s: AsyncSession, ctx: PluginContext, use: _Use, *, principal: Principal, origin: Origin | None
) -> dict[str, Any]:
    """Create the event, the usage row, the counter and the audit row in session ``s``; the answer."""
    settings: TemplatesSettings = ctx.section(TemplatesSettings)
    tpl, now = use.tpl, utcnow()
    event = None
    if use.draft is not None:
        stored = await ctx.service(EventIntake).ingest(
            settings.event_source, use.calendar, [use.draft], actor=principal.key_id, session=s, principal=principal
        )
        event = _event_view(stored[0]) if stored else None
    bumped = await s.execute(
        update(Template).where(Template.id == tpl.id).values(usage_count=Template.usage_count + 1, last_used_at=now)
    )
    if bumped.rowcount == 0:  # deleted meanwhile
        raise TemplateNotFound(tpl.id)
    usage = TemplateUsage(
        template_id=tpl.id,
        key_id=principal.key_id,
        used_at=now,
        context=use.body.context,
        result={},
        idempotency_key=use.scoped,
        request_hash=use.fingerprint,
    )
    s.add(usage)
    await s.flush()
    out = UseOut.model_validate(
        {
            "usage": {
                "id": usage.id,
                "template_id": tpl.id,
                "key_id": principal.key_id,
                "used_at": now,
                "context": use.body.context,
            },
            "output": use.output,
            "event": event,
        }
    ).model_dump(mode="json")
    usage.result = out
    await record_audit(
        s,
        entity="template",
        entity_id=tpl.id,
        action="use",
        change={"usage_id": usage.id, "event_id": event["id"] if event else None},
        principal=principal,
        origin=origin,
    )
    return out


async def _usage_replay(ctx: PluginContext, scoped: str, fingerprint: str) -> Answer | None:
    async with ctx.db.read() as s:
        prior = (await s.execute(select(TemplateUsage).where(TemplateUsage.idempotency_key == scoped))).scalar()
    if prior is None:
        return None
    if prior.request_hash != fingerprint:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body; use a new key",
            type="idempotency-conflict",
            usage_id=prior.id,
        )
    return Answer(prior.result, replayed=True)


async def use_template(
    ctx: PluginContext,
    template_id: int,
    body: UseIn,
    *,
    principal: Principal,
    idempotency_key: str | None,
    origin: Origin | None,
) -> Answer:
    """Record a usage; for an event template also create the event through the pipeline."""
    fingerprint = request_fingerprint({"template_id": template_id, **body.model_dump(mode="json")})
    scoped = f"{principal.key_id}:{idempotency_key}" if idempotency_key else None
    if scoped:
        replay = await _usage_replay(ctx, scoped, fingerprint)
        if replay is not None:
            return replay
    async with ctx.db.read() as s:
        tpl = await load_template(s, template_id)
    output = await get_service(ctx).render(tpl, body.variables)
    draft = calendar = None
    if tpl.type == "event":
        draft = _event_draft(ctx, tpl, body, output, scoped)
        calendar = body.calendar or output.get("calendar") or ctx.section(TemplatesSettings).event_calendar
    use = _Use(tpl, body, output, draft, calendar, scoped, fingerprint)
    try:
        # One transaction: the event (through the pipeline), the usage row,
        # the counter and the audit rows commit together or not at all.
        async with ctx.db.write() as s:
            out = await _record_use(s, ctx, use, principal=principal, origin=origin)
    except IntegrityError:
        # A concurrent retry with the same key won the race: answer with its result.
        replay = await _usage_replay(ctx, scoped, fingerprint) if scoped else None
        if replay is None:
            raise
        return replay
    return Answer(out)


# -- test send -----------------------------------------------------------------------------------


async def send_test(
    ctx: PluginContext,
    template_id: int,
    body: TestSendIn,
    *,
    principal: Principal,
    idempotency_key: str | None,
    origin: Origin | None,
) -> Answer:
    """Render an email template and queue it to ``body.to``."""
    if not ctx.has_service(MailQueue):
        raise Unavailable(
            "Test sends need the mail plugin, which is not enabled", type="plugin-not-enabled", plugin="mail"
        )
    queue = ctx.service(MailQueue)
    fingerprint = request_fingerprint({"test-send": template_id, **body.model_dump(mode="json")})
    if idempotency_key:
        prior = await queue.replay(idempotency_key, fingerprint, principal=principal)
        if prior is not None:
            return Answer(
                {"delivery_id": prior.id, "status": prior.status, "message_id": prior.message_id}, replayed=True
            )
    async with ctx.db.read() as s:
        tpl = await load_template(s, template_id)
    if tpl.type != "email":
        raise InvalidInput(
            f"Template {tpl.id} is a {tpl.type} template; only email templates can be test-sent",
            type="template-type",
            errors=[{"pointer": "/template_id", "detail": "not an email template"}],
        )
    out = await get_service(ctx).render(tpl, body.variables)
    queued = await queue.enqueue(
        OutgoingMail(
            to=body.to,
            subject=out["subject"],
            html=out["html"],
            text=out["text"],
            template_id=tpl.id,
            template_name=tpl.name,
        ),
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        principal=principal,
        origin=origin,
    )
    return Answer(
        {"delivery_id": queued.id, "status": queued.status, "message_id": queued.message_id}, replayed=queued.replayed
    )
