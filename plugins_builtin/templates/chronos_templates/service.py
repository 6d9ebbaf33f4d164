"""Template validation and rendering, shared by the routes and the
:class:`chronos.plugin.TemplateRenderer` service."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema_rs
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import (
    InvalidInput,
    PluginContext,
    RenderedEmail,
    Resource,
    TemplateNotFound,
    TemplateRenderer,
    TemplateRenderError,
    TemplateTypeMismatch,
    TooLarge,
    Unavailable,
)

from chronos_templates.models import Template
from chronos_templates.sandbox import Limits, RenderFailure, TemplateSandbox
from chronos_templates.schemas import CONTENT_MODELS, template_parts
from chronos_templates.settings import TemplatesSettings


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _pointer(prefix: str, path: list[Any]) -> str:
    return prefix + "".join(f"/{_escape(str(p))}" for p in path)


def get_service(ctx: PluginContext) -> TemplateService:
    """The app's one :class:`TemplateService`."""
    return ctx.resource(SERVICE)


class TemplateService:
    """Checks templates on save and renders them in worker threads."""

    def __init__(self, settings: TemplatesSettings) -> None:
        self.settings = settings
        self.sandbox = TemplateSandbox(
            Limits(settings.render_timeout_seconds, settings.max_output_chars, settings.max_loop_iterations)
        )
        self._pool = ThreadPoolExecutor(max_workers=settings.render_threads, thread_name_prefix="chronos-render")
        self._validators: OrderedDict[str, Any] = OrderedDict()
        self._validators_lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, fn, *args)
        # The sandbox stops a render itself at its deadline; this outer bound
        # only covers a saturated pool, so it says "busy", not "too slow".
        try:
            return await asyncio.wait_for(future, self.settings.render_timeout_seconds * 4 + 5)
        except TimeoutError:
            raise Unavailable("The template renderer is busy; try again", type="renderer-busy") from None

    # -- saving ------------------------------------------------------------------------

    async def validate(self, type_: str, content: Any, variables_json: Any, prefix: str = "") -> dict[str, Any]:
        """The normalised content of a valid template; 422 listing every problem otherwise."""
        errors: list[dict[str, Any]] = []
        model = CONTENT_MODELS[type_]
        clean: dict[str, Any] | None = None
        try:
            clean = model.model_validate(content).model_dump(exclude_none=True)
        except ValidationError as exc:
            for err in exc.errors():
                errors.append({"pointer": _pointer(f"{prefix}/content", list(err["loc"])), "detail": err["msg"]})
        errors.extend(self._schema_problems(variables_json, f"{prefix}/variables_json"))
        if clean is not None:
            parts = template_parts(type_, clean)
            too_big = {p: len(src) for p, (src, _) in parts.items() if len(src) > self.settings.max_source_chars}
            for part, size in too_big.items():
                errors.append(
                    {
                        "pointer": f"{prefix}/content/{part}",
                        "detail": f"{size} characters; the limit is {self.settings.max_source_chars}",
                    }
                )
            if not too_big:
                problems = await self._in_thread(self._check_parts, parts)
                for part, p in problems:
                    where = f"line {p.line}, column {p.column}: " if p.line else ""
                    errors.append(
                        {
                            "pointer": f"{prefix}/content/{part}",
                            "detail": where + p.message,
                            "line": p.line,
                            "column": p.column,
                        }
                    )
        if errors:
            first = errors[0]
            raise InvalidInput(
                f"The template is invalid: {first['pointer']}: {first['detail']}"
                + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                type="template-invalid",
                errors=errors,
            )
        assert clean is not None
        return clean

    def _check_parts(self, parts: dict[str, tuple[str, bool]]) -> list[tuple[str, Any]]:
        out = []
        for part, (source, html) in parts.items():
            for problem in sorted(self.sandbox.check(source, html=html), key=lambda p: (p.line or 0, p.column or 0)):
                out.append((part, problem))
        return out

    def _schema_problems(self, schema: Any, pointer: str) -> list[dict[str, Any]]:
        if not isinstance(schema, dict):
            return [{"pointer": pointer, "detail": "must be a JSON Schema object"}]
        try:
            jsonschema_rs.meta.validate(schema)
        except jsonschema_rs.ValidationError as exc:
            return [{"pointer": _pointer(pointer, list(exc.instance_path)), "detail": exc.message}]
        except Exception as exc:  # noqa: BLE001 - an unknown $schema dialect and similar
            return [{"pointer": pointer, "detail": str(exc).splitlines()[0]}]
        try:
            self._validator(schema)
        except Exception as exc:  # noqa: BLE001 - unresolvable $ref, bad regex pattern
            return [{"pointer": pointer, "detail": str(exc).splitlines()[0]}]
        return []

    def _validator(self, schema: dict[str, Any]) -> Any:
        key = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
        with self._validators_lock:
            v = self._validators.get(key)
            if v is not None:
                self._validators.move_to_end(key)
                return v
        # offline: a $ref to a URL must never make the server fetch it.
        v = jsonschema_rs.validator_for(schema, offline=True, validate_formats=True)
        with self._validators_lock:
            self._validators[key] = v
            while len(self._validators) > 256:
                self._validators.popitem(last=False)
        return v

    # -- rendering ---------------------------------------------------------------------

    def check_variables(self, schema: dict[str, Any], variables: Mapping[str, Any], prefix: str) -> None:
        """422 naming each missing or wrong variable (JSON pointers under ``prefix``)."""
        size = len(json.dumps(variables, default=str))
        if size > self.settings.max_variables_chars:
            raise TooLarge(
                f"The variables are {size} characters as JSON; the limit is {self.settings.max_variables_chars}",
                type="variables-too-large",
            )
        if not schema:
            return
        errors = []
        for err in self._validator(schema).iter_errors(dict(variables)):
            path = list(err.instance_path)
            prop = getattr(err.kind, "property", None)
            if type(err.kind).__name__ == "Required" and isinstance(prop, str):
                errors.append({"pointer": _pointer(prefix, [*path, prop]), "detail": f"variable {prop!r} is required"})
            else:
                errors.append({"pointer": _pointer(prefix, path), "detail": err.message})
        if errors:
            raise TemplateRenderError(
                "The variables do not match the template's schema: "
                + "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5]),
                errors,
                type="template-variables",
            )

    async def render(self, tpl: Template, variables: Mapping[str, Any], prefix: str = "/variables") -> dict[str, Any]:
        """Validate ``variables`` and render every part of ``tpl``; the shape depends on its type."""
        schema = tpl.variables_json or {}
        self.check_variables(schema, variables, prefix)
        # Top-level "default"s of the schema fill variables the caller left out.
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        values = {k: v["default"] for k, v in props.items() if isinstance(v, dict) and "default" in v}
        values.update(variables)
        parts = template_parts(tpl.type, tpl.content)
        try:
            out = await self._in_thread(self.sandbox.render, parts, values)
        except RenderFailure as failure:
            raise self._render_problem(failure, prefix) from None
        return self._shape(tpl, out)

    @staticmethod
    def _render_problem(f: RenderFailure, prefix: str) -> TemplateRenderError:
        at = f" (template part {f.part}" + (f", line {f.line})" if f.line else ")")
        if f.kind == "undefined":
            if f.variable:
                return TemplateRenderError(
                    f"Variable {f.variable!r} is missing{at}",
                    [
                        {
                            "pointer": f"{prefix}/{_escape(f.variable)}",
                            "detail": f"variable {f.variable!r} is undefined",
                            "line": f.line,
                        }
                    ],
                    type="template-variables",
                )
            return TemplateRenderError(
                f"{f.message}{at}",
                [{"pointer": prefix, "detail": f.message, "line": f.line}],
                type="template-variables",
            )
        slug = {"limit": "template-limit", "unsafe": "template-unsafe"}.get(f.kind, "template-render")
        err: dict[str, Any] = {"pointer": f"/content/{f.part}", "detail": f.message, "line": f.line}
        if f.limit:
            err["limit"] = f.limit
        return TemplateRenderError(f"{f.message}{at}", [err], type=slug)

    @staticmethod
    def _shape(tpl: Template, out: dict[str, str]) -> dict[str, Any]:
        c = tpl.content
        if tpl.type == "email":
            return {"subject": out["subject"], "html": out.get("html"), "text": out.get("text")}
        if tpl.type == "webhook":
            try:
                body = json.loads(out["body"])
            except json.JSONDecodeError as exc:
                raise TemplateRenderError(
                    f"The rendered body is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                    [
                        {
                            "pointer": "/content/body",
                            "detail": f"not JSON: {exc.msg}",
                            "line": exc.lineno,
                            "column": exc.colno,
                        }
                    ],
                ) from None
            headers = {}
            for name in c.get("headers", {}):
                value = out[f"headers/{name}"]
                if "\r" in value or "\n" in value:
                    raise TemplateRenderError(
                        f"Header {name!r} renders with a line break",
                        [
                            {
                                "pointer": f"/content/headers/{_escape(name)}",
                                "detail": "line breaks are not allowed in headers",
                            }
                        ],
                    )
                headers[name] = value
            return {"method": c.get("method", "POST"), "url": out.get("url"), "headers": headers, "body": body}
        tags = [out[f"tags/{i}"].strip() for i in range(len(c.get("tags", [])))]
        subtasks = [out[f"subtasks/{i}"].strip() for i in range(len(c.get("subtasks", [])))]
        return {
            "title": out["title"].strip(),
            "description": out.get("description", ""),
            "duration_minutes": c.get("duration_minutes", 60),
            "time_of_day": c.get("time_of_day"),
            "timezone": c.get("timezone"),
            "calendar": c.get("calendar"),
            "tags": [t for t in tags if t],
            "subtasks": [t for t in subtasks if t],
        }

    # -- cheat-sheet -------------------------------------------------------------------

    async def variables(self, tpl: Template) -> dict[str, Any]:
        parts = template_parts(tpl.type, tpl.content)
        used = await self._in_thread(lambda: {p: self.sandbox.variables(src) for p, (src, _) in parts.items()})
        schema = tpl.variables_json or {}
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = set(schema.get("required") or [])
        names: dict[str, dict[str, Any]] = {}
        for part, found in used.items():
            for name, paths in found.items():
                entry = names.setdefault(name, {"paths": set(), "used_in": []})
                entry["paths"].update(paths)
                entry["used_in"].append(part)
        out = []
        for name in sorted(set(names) | set(props)):
            entry = names.get(name, {"paths": set(), "used_in": []})
            out.append(
                {
                    "name": name,
                    "paths": sorted(entry["paths"]),
                    "used_in": entry["used_in"],
                    "declared": name in props,
                    "required": name in required,
                    "schema": props.get(name),
                }
            )
        return {
            "template_id": tpl.id,
            "variables": out,
            "undeclared": sorted(n for n in names if n not in props),
            "unused": sorted(n for n in props if n not in names),
            "variables_json": schema,
        }


async def load_template(session: AsyncSession, ref: int | str) -> Template:
    """The template with id (int) or name (str); :class:`TemplateNotFound` otherwise."""
    if isinstance(ref, int):
        row = await session.get(Template, ref)
    else:
        row = (await session.execute(select(Template).where(Template.name == ref))).scalar_one_or_none()
    if row is None:
        raise TemplateNotFound(ref)
    return row


_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


async def render_snippet(service: TemplateService, source: str, variables: Mapping[str, Any], native: bool) -> Any:
    """One small template rendered in the sandbox and the render pool (see ``TemplateRenderer.render_string``)."""
    if len(source) > service.settings.max_source_chars:
        detail = f"the template is {len(source)} characters; the limit is {service.settings.max_source_chars}"
        raise TemplateRenderError(f"The template cannot be rendered: {detail}", [{"detail": detail, "kind": "limit"}])
    single = _SINGLE_EXPR.match(source) if native else None
    if single is not None and ("{{" in single.group("expr") or "{%" in source or "{#" in source):
        single = None
    # One expression keeps its JSON value: rendered as JSON text by the sandbox, read back here.
    text = "{{ (" + single.group("expr") + ") | tojson }}" if single is not None else source
    try:
        out = (await service._in_thread(service.sandbox.render, {"template": (text, False)}, dict(variables)))[
            "template"
        ]
    except RenderFailure as exc:
        kind, message = exc.kind, exc.message
        if single is not None and kind == "error" and "Undefined is not JSON serializable" in message:
            kind, message = "undefined", f"{single.group('expr').strip()!r} is undefined"
        raise TemplateRenderError(
            f"The template cannot be rendered: {kind}: {message}",
            [{"detail": message, "kind": kind, "line": exc.line}],
        ) from None
    return json.loads(out) if single is not None else out


class StoredTemplateRenderer(TemplateRenderer):
    """The :class:`TemplateRenderer` the mail plugin uses for ``template_id`` sends."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def render_email(
        self, template: int | str, variables: Mapping[str, Any], *, pointer_prefix: str = "/variables"
    ) -> RenderedEmail:
        async with self.ctx.db.read() as s:
            tpl = await load_template(s, template)
        if tpl.type != "email":
            raise TemplateTypeMismatch(template, tpl.type, "email")
        out = await get_service(self.ctx).render(tpl, variables, pointer_prefix)
        return RenderedEmail(tpl.id, tpl.name, out["subject"], out["html"], out["text"])

    async def render_string(self, source: str, variables: Mapping[str, Any], *, native: bool = False) -> Any:
        return await render_snippet(get_service(self.ctx), source, variables, native)

    async def render_webhook(self, template: int | str, variables: Mapping[str, Any]) -> Any:
        async with self.ctx.db.read() as s:
            tpl = await load_template(s, template)
        if tpl.type != "webhook":
            raise TemplateTypeMismatch(template, tpl.type, "webhook")
        out = await get_service(self.ctx).render(tpl, variables)
        return out["body"]


SERVICE: Resource[TemplateService] = Resource(
    "templates.service", lambda ctx: TemplateService(ctx.section(TemplatesSettings)), close=TemplateService.close
)
