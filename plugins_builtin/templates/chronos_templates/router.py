"""HTTP routes under ``/api/v1/templates``: parse, authorise, call one use case, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from chronos.plugin import Context, Principal, origin_of, require_scope

from chronos_templates import catalog, usage
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

router = APIRouter(prefix="/templates", tags=["templates"])
READ = Depends(require_scope("events.read"))
MANAGE = Depends(require_scope("templates.manage"))
TemplateId = Annotated[int, Path(ge=1, le=2**63 - 1)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Retrying with the same key and body returns the first result.",
    ),
]
REPLAYED = {"Idempotency-Replayed": "true"}

_DESCRIPTIONS = {
    404: "No template with this id",
    409: "Name taken, or Idempotency-Key reused with another body",
    413: "Variables over the size limit",
    503: "A needed plugin (events, mail) is not enabled, or the renderer is busy",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses a route can give."""
    return {code: {"description": _DESCRIPTIONS[code], "content": {"application/problem+json": {}}} for code in codes}


# -- list, create, export, import ----------------------------------------------------------


@router.get("", response_model=TemplatePage)
async def list_templates(
    ctx: Context,
    _: Principal = READ,
    type: Annotated[Literal["email", "webhook", "event"] | None, Query(description="Only this type.")] = None,
    q: Annotated[
        str | None, Query(max_length=500, description="Every word must match name, description or tags.")
    ] = None,
    sort: Annotated[Literal["usage", "name", "updated", "created"], Query()] = "usage",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Templates, most used first by default, with an opaque keyset cursor."""
    return await catalog.list_templates(ctx, type=type, q=q, sort=sort, limit=limit, cursor=cursor)


@router.post("", response_model=TemplateOut, status_code=201, responses=problems(409, 503))
async def create_template(
    body: TemplateIn, ctx: Context, request: Request, response: Response, principal: Principal = MANAGE
) -> dict[str, Any]:
    """Create a template; syntax errors answer 422 with line and column."""
    view = await catalog.create_template(ctx, body, principal=principal, origin=origin_of(request))
    response.headers["Location"] = f"/api/v1/templates/{view['id']}"
    return view


@router.get("/export", response_model=ExportDocument)
async def export_templates(
    ctx: Context,
    _: Principal = READ,
    type: Annotated[Literal["email", "webhook", "event"] | None, Query()] = None,
    ids: Annotated[
        list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None,
        Query(max_length=1000, description="Only these ids (repeat the parameter)."),
    ] = None,
) -> JSONResponse:
    """Every template (or the chosen ones) as one JSON document for ``/import``."""
    return JSONResponse(
        await catalog.export_templates(ctx, type=type, ids=ids),
        headers={"Content-Disposition": 'attachment; filename="chronos-templates.json"'},
    )


@router.post("/import", response_model=ImportResult, responses=problems(409, 503))
async def import_templates(
    doc: ExportDocument,
    ctx: Context,
    request: Request,
    principal: Principal = MANAGE,
    on_conflict: Annotated[
        Literal["fail", "skip", "replace"], Query(description="When a name exists already.")
    ] = "fail",
) -> dict[str, Any]:
    """Import an export document, all or nothing: every template is checked first."""
    return await catalog.import_templates(ctx, doc, on_conflict, principal=principal, origin=origin_of(request))


# -- one template ----------------------------------------------------------------------------


@router.get("/{template_id:int}", response_model=TemplateOut, responses=problems(404))
async def get_template(template_id: TemplateId, ctx: Context, _: Principal = READ) -> dict[str, Any]:
    return await catalog.get_template(ctx, template_id)


@router.put("/{template_id:int}", response_model=TemplateOut, responses=problems(404, 409, 503))
async def replace_template(
    template_id: TemplateId, body: TemplateIn, ctx: Context, request: Request, principal: Principal = MANAGE
) -> dict[str, Any]:
    """Replace every field (usage counters are kept)."""
    return await catalog.save_template(
        ctx, template_id, body.model_dump(), "replace", principal=principal, origin=origin_of(request)
    )


@router.patch("/{template_id:int}", response_model=TemplateOut, responses=problems(404, 409, 503))
async def patch_template(
    template_id: TemplateId, body: TemplatePatch, ctx: Context, request: Request, principal: Principal = MANAGE
) -> dict[str, Any]:
    """Change some fields; ``content`` keys are merged (null removes a key)."""
    return await catalog.save_template(
        ctx, template_id, body.model_dump(exclude_unset=True), "update", principal=principal, origin=origin_of(request)
    )


@router.delete("/{template_id:int}", status_code=204, responses=problems(404))
async def delete_template(
    template_id: TemplateId, ctx: Context, request: Request, principal: Principal = MANAGE
) -> Response:
    """Delete a template and its usage rows."""
    await catalog.delete_template(ctx, template_id, principal=principal, origin=origin_of(request))
    return Response(status_code=204)


@router.get(
    "/{template_id:int}/variables",
    response_model=VariablesOut,
    response_model_by_alias=True,
    responses=problems(404, 503),
)
async def template_variables(template_id: TemplateId, ctx: Context, _: Principal = READ) -> dict[str, Any]:
    """The variables the template reads, next to its schema (the placeholder cheat-sheet)."""
    return await catalog.template_variables(ctx, template_id)


@router.post("/{template_id:int}/render", response_model=RenderOut, responses=problems(404, 413, 503))
async def render_template(template_id: TemplateId, body: RenderIn, ctx: Context, _: Principal = READ) -> dict[str, Any]:
    """Preview: render with ``variables``; nothing is stored or sent."""
    return await catalog.render_template(ctx, template_id, body.variables)


# -- use and test-send ---------------------------------------------------------------------------


@router.post("/{template_id:int}/use", response_model=UseOut, responses=problems(404, 409, 413, 503))
async def use_template(
    template_id: TemplateId,
    body: UseIn,
    ctx: Context,
    request: Request,
    principal: Principal = Depends(require_scope("events.write")),
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Record a usage; for an event template also create the event through the pipeline."""
    answer = await usage.use_template(
        ctx, template_id, body, principal=principal, idempotency_key=idempotency_key, origin=origin_of(request)
    )
    return JSONResponse(answer.body, headers=REPLAYED) if answer.replayed else answer.body


@router.post(
    "/{template_id:int}/test-send", response_model=TestSendOut, status_code=202, responses=problems(404, 409, 413, 503)
)
async def test_send(
    template_id: TemplateId,
    body: TestSendIn,
    ctx: Context,
    request: Request,
    principal: Principal = Depends(require_scope("mail.send")),
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Render an email template and queue it to ``to`` (the dashboard's test send)."""
    answer = await usage.send_test(
        ctx, template_id, body, principal=principal, idempotency_key=idempotency_key, origin=origin_of(request)
    )
    return JSONResponse(answer.body, status_code=202, headers=REPLAYED if answer.replayed else {})
