"""HTTP routes under ``/api/v1/templates``."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import Text, and_, cast, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from chronos.plugin import (
    EventDraft,
    EventIntake,
    EventStore,
    MailQueue,
    OutgoingMail,
    PluginContext,
    Principal,
    Problem,
    TemplateNotFound,
    decode_cursor,
    encode_cursor,
    record_audit,
    request_fingerprint,
    require_scope,
    utcnow,
    origin_of,
)

from chronos_templates.models import Template, TemplateUsage
from chronos_templates.schemas import (
    ExportDocument,
    ImportResult,
    RenderIn,
    RenderOut,
    TemplateIn,
    TemplateOut,
    TemplatePage,
    TemplatePatch,
    TestSendIn,
    TestSendOut,
    UseIn,
    UseOut,
    VariablesOut,
)
from chronos_templates.service import get_service, load_template
from chronos_templates.settings import TemplatesSettings

router = APIRouter(prefix="/templates", tags=["templates"])
READ = Depends(require_scope("events.read"))
MANAGE = Depends(require_scope("templates.manage"))
TemplateId = Annotated[int, Path(ge=1, le=2**63 - 1)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
           description="Retrying with the same key and body returns the first result."),
]
_ESCAPES = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})

_DESCRIPTIONS = {
    404: "No template with this id",
    409: "Name taken, or Idempotency-Key reused with another body",
    413: "Variables over the size limit",
    503: "A needed plugin (events, mail) is not enabled, or the renderer is busy",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses a route can give."""
    return {code: {"description": _DESCRIPTIONS[code], "content": {"application/problem+json": {}}} for code in codes}


SORTS: dict[str, tuple[Any, Any, bool, type]] = {
    # name -> (primary column, tie-breaker, ascending, cursor type of the primary)
    "usage": (Template.usage_count, Template.id, False, int),
    "name": (Template.name, Template.id, True, str),
    "updated": (Template.updated_at, Template.id, False, str),
    "created": (Template.created_at, Template.id, False, str),
}


def _ctx(request: Request) -> PluginContext:
    return request.app.state.chronos


def _view(row: Template) -> dict[str, Any]:
    return TemplateOut.model_validate(row, from_attributes=True).model_dump(mode="json")


async def _name_taken(s: Any, name: str, exclude: int | None = None) -> None:
    q = select(Template.id).where(Template.name == name)
    if exclude is not None:
        q = q.where(Template.id != exclude)
    other = (await s.execute(q)).scalar()
    if other is not None:
        raise Problem(409, f"A template named {name!r} already exists", type="template-name-taken", template_id=other)


def _conflict(name: str) -> Problem:
    return Problem(409, f"A template named {name!r} already exists", type="template-name-taken")


# -- list, create, export, import ----------------------------------------------------------


@router.get("", response_model=TemplatePage)
async def list_templates(
    request: Request,
    _: Principal = READ,
    type: Annotated[Literal["email", "webhook", "event"] | None, Query(description="Only this type.")] = None,
    q: Annotated[str | None, Query(max_length=500, description="Every word must match name, description or tags.")] = None,
    sort: Annotated[Literal["usage", "name", "updated", "created"], Query()] = "usage",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Templates, most used first by default, with an opaque keyset cursor."""
    primary, tie, ascending, ptype = SORTS[sort]
    stmt = select(Template)
    if type is not None:
        stmt = stmt.where(Template.type == type)
    words = (q or "").lower().split()
    if len(words) > 10:
        raise Problem(422, "Search with at most 10 words", type="validation", errors=[{"pointer": "/query/q", "detail": "too many words"}])
    for word in words:
        pattern = f"%{word.translate(_ESCAPES)}%"
        stmt = stmt.where(or_(
            func.lower(Template.name).like(pattern, escape="\\"),
            func.lower(Template.description).like(pattern, escape="\\"),
            func.lower(cast(Template.tags, Text)).like(pattern, escape="\\"),
        ))
    if cursor:
        value, last_id = decode_cursor(f"templates.{sort}", cursor, [ptype, int])
        if ptype is str and sort in ("updated", "created"):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise Problem(400, "The cursor is invalid or belongs to another query; start again without it",
                              type="invalid-cursor") from None
        after = primary > value if ascending else primary < value
        tie_after = tie > last_id if ascending else tie < last_id
        stmt = stmt.where(or_(after, and_(primary == value, tie_after)))
    order = (primary.asc(), tie.asc()) if ascending else (primary.desc(), tie.desc())
    stmt = stmt.order_by(*order).limit(limit + 1)
    async with _ctx(request).db.read() as s:
        rows = (await s.execute(stmt)).scalars().all()
    items = rows[:limit]
    nxt = None
    if len(rows) > limit:
        last = items[-1]
        key = getattr(last, primary.key)
        nxt = encode_cursor(f"templates.{sort}", [key.isoformat() if isinstance(key, datetime) else key, last.id])
    return {"items": [_view(r) for r in items], "next_cursor": nxt}


@router.post("", response_model=TemplateOut, status_code=201, responses=problems(409, 503))
async def create_template(body: TemplateIn, request: Request, response: Response, principal: Principal = MANAGE) -> dict[str, Any]:
    """Create a template; syntax errors answer 422 with line and column."""
    ctx = _ctx(request)
    content = await get_service(ctx).validate(body.type, body.content, body.variables_json)
    now = utcnow()
    try:
        async with ctx.db.write() as s:
            await _name_taken(s, body.name)
            row = Template(
                name=body.name, type=body.type, description=body.description, tags=body.tags,
                variables_json=body.variables_json, content=content, usage_count=0, created_at=now, updated_at=now,
            )
            s.add(row)
            await s.flush()
            await record_audit(s, entity="template", entity_id=row.id, action="create",
                               change={"name": row.name, "type": row.type}, principal=principal, origin=origin_of(request))
            view = _view(row)
    except IntegrityError:
        raise _conflict(body.name) from None
    response.headers["Location"] = f"/api/v1/templates/{view['id']}"
    return view


@router.get("/export", response_model=ExportDocument)
async def export_templates(
    request: Request,
    _: Principal = READ,
    type: Annotated[Literal["email", "webhook", "event"] | None, Query()] = None,
    ids: Annotated[list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None,
                   Query(max_length=1000, description="Only these ids (repeat the parameter).")] = None,
) -> JSONResponse:
    """Every template (or the chosen ones) as one JSON document for ``/import``."""
    stmt = select(Template).order_by(Template.name)
    if type is not None:
        stmt = stmt.where(Template.type == type)
    if ids:
        stmt = stmt.where(Template.id.in_(ids))
    async with _ctx(request).db.read() as s:
        rows = (await s.execute(stmt)).scalars().all()
    doc = ExportDocument(
        exported_at=utcnow(),
        templates=[
            {"name": r.name, "type": r.type, "description": r.description, "tags": r.tags,
             "variables_json": r.variables_json, "content": r.content}
            for r in rows
        ],
    )
    return JSONResponse(
        doc.model_dump(mode="json"),
        headers={"Content-Disposition": 'attachment; filename="chronos-templates.json"'},
    )


@router.post("/import", response_model=ImportResult, responses=problems(409, 503))
async def import_templates(
    doc: ExportDocument,
    request: Request,
    principal: Principal = MANAGE,
    on_conflict: Annotated[Literal["fail", "skip", "replace"], Query(description="When a name exists already.")] = "fail",
) -> dict[str, Any]:
    """Import an export document, all or nothing: every template is checked first."""
    ctx = _ctx(request)
    svc = get_service(ctx)
    names = [t.name for t in doc.templates]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise Problem(422, f"The document names a template twice: {', '.join(dupes)}", type="validation",
                      errors=[{"pointer": f"/templates/{names.index(n)}/name", "detail": "duplicate name"} for n in dupes])
    cleaned = []
    for i, t in enumerate(doc.templates):
        cleaned.append(await svc.validate(t.type, t.content, t.variables_json, prefix=f"/templates/{i}"))
    result: dict[str, list[str]] = {"created": [], "replaced": [], "skipped": []}
    now = utcnow()
    try:
        async with ctx.db.write() as s:
            existing = {
                r.name: r for r in (await s.execute(select(Template).where(Template.name.in_(names)))).scalars().all()
            } if names else {}
            if existing and on_conflict == "fail":
                raise Problem(409, f"Templates exist already: {', '.join(sorted(existing))}; pass on_conflict=skip or replace",
                              type="template-name-taken", names=sorted(existing))
            for t, content in zip(doc.templates, cleaned, strict=True):
                row = existing.get(t.name)
                if row is not None and on_conflict == "skip":
                    result["skipped"].append(t.name)
                    continue
                if row is None:
                    row = Template(name=t.name, usage_count=0, created_at=now)
                    s.add(row)
                    action = "import-create"
                    result["created"].append(t.name)
                else:
                    action = "import-replace"
                    result["replaced"].append(t.name)
                row.type, row.description, row.tags = t.type, t.description, t.tags
                row.variables_json, row.content, row.updated_at = t.variables_json, content, now
                await s.flush()
                await record_audit(s, entity="template", entity_id=row.id, action=action,
                                   change={"name": t.name, "type": t.type}, principal=principal, origin=origin_of(request))
    except IntegrityError:
        raise Problem(409, "A template with one of these names was created meanwhile; import again",
                      type="template-name-taken") from None
    return result


# -- one template ----------------------------------------------------------------------------


@router.get("/{template_id:int}", response_model=TemplateOut, responses=problems(404))
async def get_template(template_id: TemplateId, request: Request, _: Principal = READ) -> dict[str, Any]:
    async with _ctx(request).db.read() as s:
        return _view(await load_template(s, template_id))


@router.put("/{template_id:int}", response_model=TemplateOut, responses=problems(404, 409, 503))
async def replace_template(template_id: TemplateId, body: TemplateIn, request: Request, principal: Principal = MANAGE) -> dict[str, Any]:
    """Replace every field (usage counters are kept)."""
    return await _save(request, principal, template_id, body.model_dump(), "replace")


@router.patch("/{template_id:int}", response_model=TemplateOut, responses=problems(404, 409, 503))
async def patch_template(template_id: TemplateId, body: TemplatePatch, request: Request, principal: Principal = MANAGE) -> dict[str, Any]:
    """Change some fields; ``content`` keys are merged (null removes a key)."""
    return await _save(request, principal, template_id, body.model_dump(exclude_unset=True), "update")


async def _save(request: Request, principal: Principal, template_id: int, fields: dict[str, Any], action: str) -> dict[str, Any]:
    ctx = _ctx(request)
    for key in ("name", "type", "description", "tags", "variables_json", "content"):
        if key in fields and fields[key] is None:
            raise Problem(422, f"{key} cannot be null", type="validation", errors=[{"pointer": f"/{key}", "detail": "null"}])
    async with ctx.db.read() as s:
        current = await load_template(s, template_id)
    type_ = fields.get("type", current.type)
    if "content" in fields and action == "update" and type_ == current.type:
        content = {**current.content, **fields["content"]}
        content = {k: v for k, v in content.items() if v is not None}
    elif "content" in fields:
        content = fields["content"]
    elif type_ != current.type:
        raise Problem(422, "Changing the type needs the new type's content", type="validation",
                      errors=[{"pointer": "/content", "detail": f"give the {type_} content"}])
    else:
        content = current.content
    schema = fields.get("variables_json", current.variables_json)
    clean = await get_service(ctx).validate(type_, content, schema)
    try:
        async with ctx.db.write() as s:
            row = await load_template(s, template_id)
            if "name" in fields and fields["name"] != row.name:
                await _name_taken(s, fields["name"], exclude=row.id)
            changed = []
            for key, value in (("name", fields.get("name", row.name)), ("type", type_),
                               ("description", fields.get("description", row.description)),
                               ("tags", fields.get("tags", row.tags)), ("variables_json", schema), ("content", clean)):
                if getattr(row, key) != value:
                    setattr(row, key, value)
                    changed.append(key)
            if changed:
                row.updated_at = utcnow()
                await record_audit(s, entity="template", entity_id=row.id, action=action,
                                   change={"fields": changed}, principal=principal, origin=origin_of(request))
            await s.flush()
            return _view(row)
    except IntegrityError:
        raise _conflict(str(fields.get("name"))) from None


@router.delete("/{template_id:int}", status_code=204, responses=problems(404))
async def delete_template(template_id: TemplateId, request: Request, principal: Principal = MANAGE) -> Response:
    """Delete a template and its usage rows."""
    async with _ctx(request).db.write() as s:
        row = await load_template(s, template_id)
        name = row.name
        await s.execute(TemplateUsage.__table__.delete().where(TemplateUsage.template_id == template_id))
        await s.delete(row)
        await record_audit(s, entity="template", entity_id=template_id, action="delete",
                           change={"name": name}, principal=principal, origin=origin_of(request))
    return Response(status_code=204)


@router.get("/{template_id:int}/variables", response_model=VariablesOut, response_model_by_alias=True,
            responses=problems(404, 503))
async def template_variables(template_id: TemplateId, request: Request, _: Principal = READ) -> dict[str, Any]:
    """The variables the template reads, next to its schema (the placeholder cheat-sheet)."""
    ctx = _ctx(request)
    async with ctx.db.read() as s:
        tpl = await load_template(s, template_id)
    return await get_service(ctx).variables(tpl)


@router.post("/{template_id:int}/render", response_model=RenderOut, responses=problems(404, 413, 503))
async def render_template(template_id: TemplateId, body: RenderIn, request: Request, _: Principal = READ) -> dict[str, Any]:
    """Preview: render with ``variables``; nothing is stored or sent."""
    ctx = _ctx(request)
    async with ctx.db.read() as s:
        tpl = await load_template(s, template_id)
    output = await get_service(ctx).render(tpl, body.variables)
    return {"template_id": tpl.id, "type": tpl.type, "output": output}


# -- use and test-send ---------------------------------------------------------------------------


def _event_window(body: UseIn, output: dict[str, Any]) -> tuple[Any, Any, str | None]:
    """(start, end, timezone) for an event template's use: datetimes, or dates when all-day."""
    try:
        return _window(body, output)
    except OverflowError:
        raise Problem(422, "The event would end after the year 9999", type="validation",
                      errors=[{"pointer": "/start" if body.start else "/date", "detail": "too late"}]) from None


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
    raise Problem(422, "Give start (with an offset) or date to place the event", type="validation",
                  errors=[{"pointer": "/start", "detail": "start or date is required for an event template"}])


def _event_view(stored: Any) -> dict[str, Any]:
    return {
        "id": stored.id,
        **stored.event.model_dump(mode="json"),
        "created_at": stored.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "updated_at": stored.updated_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


@router.post("/{template_id:int}/use", response_model=UseOut, responses=problems(404, 409, 413, 503))
async def use_template(
    template_id: TemplateId,
    body: UseIn,
    request: Request,
    principal: Principal = Depends(require_scope("events.write")),
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Record a usage; for an event template also create the event through the pipeline."""
    ctx = _ctx(request)
    settings: TemplatesSettings = ctx.section(TemplatesSettings)
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
        # The kernel always offers the intake; events are only stored when a
        # plugin (normally `events`) provides the event store.
        if not (ctx.has_service(EventIntake) and ctx.has_service(EventStore)):
            raise Problem(503, "Event templates need the events plugin, which is not enabled",
                          type="plugin-not-enabled", plugin="events")
        start, end, zone = _event_window(body, output)
        description = output["description"]
        if output["subtasks"]:
            checklist = "\n".join(f"[ ] {t}" for t in output["subtasks"])
            description = f"{description.rstrip()}\n\n{checklist}" if description.strip() else checklist
        # A retried request (same Idempotency-Key) yields the same uid, so the
        # store updates the first event instead of adding a second one.
        seed = scoped or uuid.uuid4().hex
        uid = f"template-{tpl.id}-{hashlib.sha256(seed.encode()).hexdigest()[:24]}"
        draft = EventDraft(
            uid=uid, start=start, end=end, title=output["title"], description=description, timezone=zone,
            tags=output["tags"], metadata={"template_id": tpl.id, "template_name": tpl.name},
        )
        calendar = body.calendar or output.get("calendar") or settings.event_calendar
    now = utcnow()
    try:
        # One transaction: the event (through the pipeline), the usage row,
        # the counter and the audit rows commit together or not at all.
        async with ctx.db.write() as s:
            event = None
            if draft is not None:
                stored = await ctx.service(EventIntake).ingest(
                    settings.event_source, calendar, [draft], actor=principal.key_id, session=s
                )
                event = _event_view(stored[0]) if stored else None
            bumped = await s.execute(update(Template).where(Template.id == tpl.id)
                                     .values(usage_count=Template.usage_count + 1, last_used_at=now))
            if bumped.rowcount == 0:  # deleted meanwhile
                raise TemplateNotFound(tpl.id)
            usage = TemplateUsage(template_id=tpl.id, key_id=principal.key_id, used_at=now, context=body.context,
                                  result={}, idempotency_key=scoped, request_hash=fingerprint)
            s.add(usage)
            await s.flush()
            out = UseOut.model_validate({
                "usage": {"id": usage.id, "template_id": tpl.id, "key_id": principal.key_id, "used_at": now,
                          "context": body.context},
                "output": output, "event": event,
            }).model_dump(mode="json")
            usage.result = out
            await record_audit(s, entity="template", entity_id=tpl.id, action="use",
                               change={"usage_id": usage.id, "event_id": event["id"] if event else None},
                               principal=principal, origin=origin_of(request))
    except IntegrityError:
        # A concurrent retry with the same key won the race: answer with its result.
        replay = await _usage_replay(ctx, scoped or "", fingerprint) if scoped else None
        if replay is None:
            raise
        return replay
    return out


async def _usage_replay(ctx: PluginContext, scoped: str, fingerprint: str) -> JSONResponse | None:
    async with ctx.db.read() as s:
        prior = (await s.execute(select(TemplateUsage).where(TemplateUsage.idempotency_key == scoped))).scalar()
    if prior is None:
        return None
    if prior.request_hash != fingerprint:
        raise Problem(409, "This Idempotency-Key was already used with a different request body; use a new key",
                      type="idempotency-conflict", usage_id=prior.id)
    return JSONResponse(prior.result, headers={"Idempotency-Replayed": "true"})


@router.post("/{template_id:int}/test-send", response_model=TestSendOut, status_code=202,
             responses=problems(404, 409, 413, 503))
async def test_send(
    template_id: TemplateId,
    body: TestSendIn,
    request: Request,
    principal: Principal = Depends(require_scope("mail.send")),
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Render an email template and queue it to ``to`` (the dashboard's test send)."""
    ctx = _ctx(request)
    if not ctx.has_service(MailQueue):
        raise Problem(503, "Test sends need the mail plugin, which is not enabled", type="plugin-not-enabled", plugin="mail")
    queue = ctx.service(MailQueue)
    fingerprint = request_fingerprint({"test-send": template_id, **body.model_dump(mode="json")})
    if idempotency_key:
        prior = await queue.replay(idempotency_key, fingerprint, principal=principal)
        if prior is not None:
            return JSONResponse({"delivery_id": prior.id, "status": prior.status, "message_id": prior.message_id},
                                status_code=202, headers={"Idempotency-Replayed": "true"})
    async with ctx.db.read() as s:
        tpl = await load_template(s, template_id)
    if tpl.type != "email":
        raise Problem(422, f"Template {tpl.id} is a {tpl.type} template; only email templates can be test-sent",
                      type="template-type", errors=[{"pointer": "/template_id", "detail": "not an email template"}])
    out = await get_service(ctx).render(tpl, body.variables)
    queued = await queue.enqueue(
        OutgoingMail(to=body.to, subject=out["subject"], html=out["html"], text=out["text"],
                     template_id=tpl.id, template_name=tpl.name),
        idempotency_key=idempotency_key, fingerprint=fingerprint, principal=principal, origin=origin_of(request),
    )
    headers = {"Idempotency-Replayed": "true"} if queued.replayed else {}
    return JSONResponse({"delivery_id": queued.id, "status": queued.status, "message_id": queued.message_id},
                        status_code=202, headers=headers)
