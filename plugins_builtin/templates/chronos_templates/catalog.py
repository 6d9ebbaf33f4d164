"""The template catalogue: list, create, change, delete, export and import templates.

Each function is one use case; it raises domain errors (:mod:`chronos.plugin`)
and records audit rows attributed to ``origin``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Text, and_, cast, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    Conflict,
    InvalidInput,
    MalformedInput,
    Origin,
    PluginContext,
    Principal,
    decode_cursor,
    encode_cursor,
    record_audit,
    utcnow,
)

from chronos_templates.models import Template, TemplateUsage
from chronos_templates.schemas import ExportDocument, ExportedTemplate, TemplateIn, TemplateOut
from chronos_templates.service import get_service, load_template

SORTS: dict[str, tuple[Any, Any, bool, type]] = {
    # name -> (primary column, tie-breaker, ascending, cursor type of the primary)
    "usage": (Template.usage_count, Template.id, False, int),
    "name": (Template.name, Template.id, True, str),
    "updated": (Template.updated_at, Template.id, False, str),
    "created": (Template.created_at, Template.id, False, str),
}
FIELDS = ("name", "type", "description", "tags", "variables_json", "content")
_ESCAPES = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})


def view(row: Template) -> dict[str, Any]:
    """The JSON answer for a template row."""
    return TemplateOut.model_validate(row, from_attributes=True).model_dump(mode="json")


def _name_taken(name: str, template_id: int | None = None) -> Conflict:
    extra = {} if template_id is None else {"template_id": template_id}
    return Conflict(f"A template named {name!r} already exists", type="template-name-taken", **extra)


async def _check_name_free(s: AsyncSession, name: str, exclude: int | None = None) -> None:
    q = select(Template.id).where(Template.name == name)
    if exclude is not None:
        q = q.where(Template.id != exclude)
    other = (await s.execute(q)).scalar()
    if other is not None:
        raise _name_taken(name, other)


# -- list ------------------------------------------------------------------------------------


def _search(stmt: Any, q: str | None) -> Any:
    words = (q or "").lower().split()
    if len(words) > 10:
        raise InvalidInput("Search with at most 10 words", errors=[{"pointer": "/query/q", "detail": "too many words"}])
    for word in words:
        pattern = f"%{word.translate(_ESCAPES)}%"
        stmt = stmt.where(
            or_(
                func.lower(Template.name).like(pattern, escape="\\"),
                func.lower(Template.description).like(pattern, escape="\\"),
                func.lower(cast(Template.tags, Text)).like(pattern, escape="\\"),
            )
        )
    return stmt


def _after_cursor(stmt: Any, sort: str, cursor: str) -> Any:
    primary, tie, ascending, ptype = SORTS[sort]
    value, last_id = decode_cursor(f"templates.{sort}", cursor, [ptype, int])
    if ptype is str and sort in ("updated", "created"):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise MalformedInput(
                "The cursor is invalid or belongs to another query; start again without it", type="invalid-cursor"
            ) from None
    after = primary > value if ascending else primary < value
    tie_after = tie > last_id if ascending else tie < last_id
    return stmt.where(or_(after, and_(primary == value, tie_after)))


async def list_templates(
    ctx: PluginContext, *, type: str | None, q: str | None, sort: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    """One page of templates in ``sort`` order, with the cursor of the next page."""
    primary, tie, ascending, _ = SORTS[sort]
    stmt = select(Template)
    if type is not None:
        stmt = stmt.where(Template.type == type)
    stmt = _search(stmt, q)
    if cursor:
        stmt = _after_cursor(stmt, sort, cursor)
    order = (primary.asc(), tie.asc()) if ascending else (primary.desc(), tie.desc())
    async with ctx.db.read() as s:
        rows = (await s.execute(stmt.order_by(*order).limit(limit + 1))).scalars().all()
    items = rows[:limit]
    nxt = None
    if len(rows) > limit:
        last = items[-1]
        key = getattr(last, primary.key)
        nxt = encode_cursor(f"templates.{sort}", [key.isoformat() if isinstance(key, datetime) else key, last.id])
    return {"items": [view(r) for r in items], "next_cursor": nxt}


# -- one template ------------------------------------------------------------------------------


async def get_template(ctx: PluginContext, template_id: int) -> dict[str, Any]:
    async with ctx.db.read() as s:
        return view(await load_template(s, template_id))


async def create_template(
    ctx: PluginContext, body: TemplateIn, *, principal: Principal, origin: Origin | None
) -> dict[str, Any]:
    """Check and store a new template; its view."""
    content = await get_service(ctx).validate(body.type, body.content, body.variables_json)
    now = utcnow()
    try:
        async with ctx.db.write() as s:
            await _check_name_free(s, body.name)
            row = Template(
                name=body.name,
                type=body.type,
                description=body.description,
                tags=body.tags,
                variables_json=body.variables_json,
                content=content,
                usage_count=0,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            await s.flush()
            await record_audit(
                s,
                entity="template",
                entity_id=row.id,
                action="create",
                change={"name": row.name, "type": row.type},
                principal=principal,
                origin=origin,
            )
            return view(row)
    except IntegrityError:
        raise _name_taken(body.name) from None


def _new_content(current: Template, fields: dict[str, Any], type_: str, action: str) -> dict[str, Any]:
    """The content after a replace or a patch (a patch of the same type merges; null removes a key)."""
    if "content" in fields and action == "update" and type_ == current.type:
        merged = {**current.content, **fields["content"]}
        return {k: v for k, v in merged.items() if v is not None}
    if "content" in fields:
        return fields["content"]
    if type_ != current.type:
        raise InvalidInput(
            "Changing the type needs the new type's content",
            errors=[{"pointer": "/content", "detail": f"give the {type_} content"}],
        )
    return current.content


def _apply(row: Template, fields: dict[str, Any], type_: str, schema: Any, content: dict[str, Any]) -> list[str]:
    """Set the changed columns of ``row``; the names of those changed."""
    changed = []
    for key, value in (
        ("name", fields.get("name", row.name)),
        ("type", type_),
        ("description", fields.get("description", row.description)),
        ("tags", fields.get("tags", row.tags)),
        ("variables_json", schema),
        ("content", content),
    ):
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed.append(key)
    return changed


async def save_template(
    ctx: PluginContext,
    template_id: int,
    fields: dict[str, Any],
    action: str,
    *,
    principal: Principal,
    origin: Origin | None,
) -> dict[str, Any]:
    """Replace (``action="replace"``) or patch (``"update"``) a template; its view."""
    for key in FIELDS:
        if key in fields and fields[key] is None:
            raise InvalidInput(f"{key} cannot be null", errors=[{"pointer": f"/{key}", "detail": "null"}])
    async with ctx.db.read() as s:
        current = await load_template(s, template_id)
    type_ = fields.get("type", current.type)
    schema = fields.get("variables_json", current.variables_json)
    clean = await get_service(ctx).validate(type_, _new_content(current, fields, type_, action), schema)
    try:
        async with ctx.db.write() as s:
            row = await load_template(s, template_id)
            if "name" in fields and fields["name"] != row.name:
                await _check_name_free(s, fields["name"], exclude=row.id)
            changed = _apply(row, fields, type_, schema, clean)
            if changed:
                row.updated_at = utcnow()
                await record_audit(
                    s,
                    entity="template",
                    entity_id=row.id,
                    action=action,
                    change={"fields": changed},
                    principal=principal,
                    origin=origin,
                )
            await s.flush()
            return view(row)
    except IntegrityError:
        raise _name_taken(str(fields.get("name"))) from None


async def delete_template(ctx: PluginContext, template_id: int, *, principal: Principal, origin: Origin | None) -> None:
    """Delete a template and its usage rows."""
    async with ctx.db.write() as s:
        row = await load_template(s, template_id)
        name = row.name
        await s.execute(TemplateUsage.__table__.delete().where(TemplateUsage.template_id == template_id))
        await s.delete(row)
        await record_audit(
            s,
            entity="template",
            entity_id=template_id,
            action="delete",
            change={"name": name},
            principal=principal,
            origin=origin,
        )


async def template_variables(ctx: PluginContext, template_id: int) -> dict[str, Any]:
    """The variables a template reads, next to its schema."""
    async with ctx.db.read() as s:
        tpl = await load_template(s, template_id)
    return await get_service(ctx).variables(tpl)


async def render_template(ctx: PluginContext, template_id: int, variables: dict[str, Any]) -> dict[str, Any]:
    """A preview of a template rendered with ``variables``."""
    async with ctx.db.read() as s:
        tpl = await load_template(s, template_id)
    output = await get_service(ctx).render(tpl, variables)
    return {"template_id": tpl.id, "type": tpl.type, "output": output}


# -- export and import -------------------------------------------------------------------------


async def export_templates(ctx: PluginContext, *, type: str | None, ids: list[int] | None) -> dict[str, Any]:
    """Every template (or the chosen ones) as an export document."""
    stmt = select(Template).order_by(Template.name)
    if type is not None:
        stmt = stmt.where(Template.type == type)
    if ids:
        stmt = stmt.where(Template.id.in_(ids))
    async with ctx.db.read() as s:
        rows = (await s.execute(stmt)).scalars().all()
    doc = ExportDocument(
        exported_at=utcnow(),
        templates=[
            {
                "name": r.name,
                "type": r.type,
                "description": r.description,
                "tags": r.tags,
                "variables_json": r.variables_json,
                "content": r.content,
            }
            for r in rows
        ],
    )
    return doc.model_dump(mode="json")


async def _checked_contents(ctx: PluginContext, templates: list[ExportedTemplate]) -> list[dict[str, Any]]:
    """The normalised content of each template; 422 on a duplicate name or an invalid template."""
    names = [t.name for t in templates]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(
            f"The document names a template twice: {', '.join(dupes)}",
            errors=[{"pointer": f"/templates/{names.index(n)}/name", "detail": "duplicate name"} for n in dupes],
        )
    svc = get_service(ctx)
    return [
        await svc.validate(t.type, t.content, t.variables_json, prefix=f"/templates/{i}")
        for i, t in enumerate(templates)
    ]


async def _write_imports(
    s: AsyncSession,
    templates: list[ExportedTemplate],
    contents: list[dict[str, Any]],
    on_conflict: str,
    *,
    principal: Principal,
    origin: Origin | None,
) -> dict[str, list[str]]:
    names = [t.name for t in templates]
    result: dict[str, list[str]] = {"created": [], "replaced": [], "skipped": []}
    existing = (
        {r.name: r for r in (await s.execute(select(Template).where(Template.name.in_(names)))).scalars().all()}
        if names
        else {}
    )
    if existing and on_conflict == "fail":
        taken = sorted(existing)
        raise Conflict(
            f"Templates exist already: {', '.join(taken)}; pass on_conflict=skip or replace",
            type="template-name-taken",
            names=taken,
        )
    now = utcnow()
    for t, content in zip(templates, contents, strict=True):
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
        await record_audit(
            s,
            entity="template",
            entity_id=row.id,
            action=action,
            change={"name": t.name, "type": t.type},
            principal=principal,
            origin=origin,
        )
    return result


async def import_templates(
    ctx: PluginContext, doc: ExportDocument, on_conflict: str, *, principal: Principal, origin: Origin | None
) -> dict[str, list[str]]:
    """Import an export document, all or nothing: every template is checked first."""
    contents = await _checked_contents(ctx, doc.templates)
    try:
        async with ctx.db.write() as s:
            return await _write_imports(s, doc.templates, contents, on_conflict, principal=principal, origin=origin)
    except IntegrityError:
        raise Conflict(
            "A template with one of these names was created meanwhile; import again", type="template-name-taken"
        ) from None
