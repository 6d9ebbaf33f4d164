"""Workflows: when a command completes or fails, enqueue a follow-up command.

Rules fire inside the transaction that completes or fails the triggering
command, so the follow-up exists exactly when the outcome does. A unique key on
(rule, triggering command) makes each rule fire at most once per command. The
follow-up passes the whitelist like every other command, and a chain stops at
``commands.workflow_max_depth`` (so a loop A -> B -> A ends), audited.

Each rule fires in its own savepoint: a rule whose firing fails in the
database (or in any way not foreseen below) is rolled back alone, recorded as
an ``error`` firing and audited (``workflow error``); the triggering command's
outcome, and every other command completed in the same transaction, stand.
Audit rows never hold values that cannot be stored (a template that renders a
NUL byte or a non-finite number is refused and described, not quoted).

``params_template_json`` is a JSON object whose strings are Jinja2 templates.
With the ``templates`` plugin enabled they are rendered by its
:class:`~chronos.plugin.TemplateRenderer` (``render_string``): the bounded
sandbox, with its time and output budget, in its render pool — never on the
event loop. A string that is exactly one expression (``"{{ result.count }}"``)
keeps the expression's JSON type; any other string renders to text. Without
the templates plugin only plain substitutions are rendered
(``{{ result.count }}``, ``{{ params.room }}``, ``{{ result['items'][0] }}``):
filters, tests, operators and ``{% %}`` blocks make the firing fail with an
error saying the templates plugin is needed. Templates are checked for syntax
when a rule is saved.
"""

from __future__ import annotations

import functools
import logging
import re
from datetime import timedelta
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import Origin, Principal, TemplateRenderer, TemplateRenderError, record_audit, utcnow

from chronos_commands.models import ExternalCommand, Workflow, WorkflowFiring
from chronos_commands.queue import CommandQueue, NewCommand, Rejected
from chronos_commands.whitelist import MAX_PARAM_VALUE, MAX_PAYLOAD, encoded_size, storable_json, storable_text

T = ExternalCommand.__table__
WF = Workflow.__table__
F = WorkflowFiring.__table__
MAX_TEMPLATE = 4000
MAX_SEQUENCE = 10_000
_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
log = logging.getLogger("chronos_commands.workflows")


class TemplateEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with bounded sequence repetition, powers and ranges."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 100:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
                    raise SecurityError("the repeated sequence would be too long")
        return super().call_binop(context, operator, left, right)


def _bounded_range(*args: int) -> range:
    r = range(*args)
    if len(r) > 1000:
        raise SecurityError("range is limited to 1000 items in workflow templates")
    return r


@functools.lru_cache(maxsize=1)
def environment() -> TemplateEnvironment:
    env = TemplateEnvironment(undefined=StrictUndefined, autoescape=False)
    env.globals["range"] = _bounded_range
    return env


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> Any:
    env = environment()
    single = _SINGLE_EXPR.match(source)
    if single and "{{" not in single.group("expr") and "{%" not in source:
        return ("expr", env.compile_expression(single.group("expr"), undefined_to_none=False))
    return ("text", env.from_string(source))


def template_errors(template: Any, pointer: str = "/params_template_json") -> list[dict[str, str]]:
    """Syntax problems in every string of a params template (checked when a rule is saved)."""
    out: list[dict[str, str]] = []
    if isinstance(template, str):
        if len(template) > MAX_TEMPLATE:
            out.append(
                {"pointer": pointer, "detail": f"template longer than {MAX_TEMPLATE} characters", "type": "template"}
            )
            return out
        try:
            _compile(template)
        except TemplateError as exc:
            out.append({"pointer": pointer, "detail": f"template error: {exc}", "type": "template"})
    elif isinstance(template, dict):
        for k, v in template.items():
            out.extend(template_errors(v, f"{pointer}/{str(k).replace('~', '~0').replace('/', '~1')}"))
    elif isinstance(template, list):
        for i, v in enumerate(template):
            out.extend(template_errors(v, f"{pointer}/{i}"))
    return out


NEEDS_TEMPLATES = (
    "only plain substitutions such as {{ result.count }} or {{ params['room'] }} are rendered without the"
    " templates plugin; enable it for filters, operators and {% %} blocks"
)
_PATH = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[(?:\d+|'[^'\\]*'|\"[^\"\\]*\")\])*"
_PATH_RE = re.compile(r"\s*(" + _PATH + r")\s*")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\['([^'\\]*)'\]|\[\"([^\"\\]*)\"\]")
_MUSTACHE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def _lookup(path: str, context: dict[str, Any]) -> Any:
    head = re.match(r"[A-Za-z_][A-Za-z0-9_]*", path)
    assert head is not None
    if head.group(0) not in context:
        raise ValueError(f"{head.group(0)!r} is undefined")
    value, shown = context[head.group(0)], head.group(0)
    for step in _STEP.finditer(path, head.end()):
        attr, index, single, double = step.groups()
        shown += step.group(0)
        if index is not None and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        elif index is None and isinstance(value, dict) and (attr or single or double or "") in value:
            value = value[attr or single or double or ""]
        else:
            raise ValueError(f"{shown!r} is undefined")
    return value


def render_plain(source: str, context: dict[str, Any]) -> Any:
    """``source`` with its ``{{ path }}`` substitutions filled in (no Jinja2: linear time, nothing evaluated);
    exactly one substitution keeps the value's JSON type. ``ValueError`` for anything else."""
    if "{%" in source or "{#" in source:
        raise ValueError(NEEDS_TEMPLATES)
    found = list(_MUSTACHE.finditer(source))
    for m in found:
        if not _PATH_RE.fullmatch(m.group(1)):
            raise ValueError(f"{m.group(0)[:60]!r}: {NEEDS_TEMPLATES}")
    if len(found) == 1 and found[0].group(0) == source.strip():
        return _lookup(found[0].group(1).strip(), context)
    return _MUSTACHE.sub(lambda m: str(_lookup(m.group(1).strip(), context)), source)


async def render(template: Any, context: dict[str, Any], renderer: TemplateRenderer | None) -> Any:
    """Render every string of ``template`` with ``renderer`` (the templates plugin's sandbox), or plainly.

    Raises ``TemplateRenderError`` or ``ValueError`` saying why."""
    if isinstance(template, str):
        if renderer is not None:
            value = await renderer.render_string(template, context, native=True)
        else:
            value = render_plain(template, context)
        if isinstance(value, str) and len(value) > MAX_PARAM_VALUE:
            raise ValueError(f"a rendered value is longer than {MAX_PARAM_VALUE} characters")
        value = _plain(value)
        if not isinstance(value, str) and encoded_size(value) > MAX_PAYLOAD:
            raise ValueError(f"a rendered value is larger than {MAX_PAYLOAD} bytes")
        return value
    if isinstance(template, dict):
        return {k: await render(v, context, renderer) for k, v in template.items()}
    if isinstance(template, list):
        return [await render(v, context, renderer) for v in template]
    return template


def _plain(value: Any) -> Any:
    """Sandbox values back to plain JSON (immutable wrappers, tuples)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    # e.g. ``result.items`` names the dict method, not the key: say so instead of storing its repr.
    raise ValueError(f"the template produced a {type(value).__name__}, not a JSON value (use result['key'])")


async def _render_params(rule: Any, trigger: Any, outcome: str, renderer: TemplateRenderer | None) -> dict[str, Any]:
    """The follow-up command's params: the rule's template over the triggering command."""
    context = {
        "params": trigger["params_json"] or {},
        "args": trigger["args"] or [],
        "result": trigger["result_json"],
        "error": trigger["error"],
        "command": trigger["command"],
        "target": trigger["target_system"],
        "id": trigger["id"],
        "attempts": trigger["attempts"],
        "status": trigger["status"],
        "outcome": outcome,
    }
    params = await render(rule["params_template_json"] or {}, context, renderer)
    if not isinstance(params, dict):
        raise ValueError("the template must render to a JSON object")
    return params


def workflow_view(row: Any) -> dict[str, Any]:
    from chronos_commands.queue import iso

    return {
        "id": row["id"],
        "name": row["name"],
        "trigger_command": row["trigger_command"],
        "trigger_target": row["trigger_target"],
        "on": row["on_status"],
        "action_command": row["action_command"],
        "action_target": row["action_target"],
        "params_template_json": row["params_template_json"] or {},
        "delay_seconds": row["delay_seconds"],
        "enabled": row["enabled"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


class WorkflowEngine:
    """Fires the rules matching a command's outcome, inside the caller's transaction."""

    def __init__(self, queue: CommandQueue) -> None:
        self.queue = queue
        self.settings = queue.settings

    def _renderer(self) -> TemplateRenderer | None:
        """The templates plugin's bounded renderer, or None (plain substitutions only)."""
        ctx = self.queue.ctx
        if not ctx.has_service(TemplateRenderer):
            return None
        renderer = ctx.service(TemplateRenderer)
        # A renderer of stored templates only keeps the default render_string: plain it is.
        if type(renderer).render_string is TemplateRenderer.render_string:
            return None
        return renderer

    async def rules_for(self, s: AsyncSession, commands: set[str], outcome: str) -> list[Any]:
        """Enabled rules triggered by any of ``commands`` on ``outcome`` (one query for a batch)."""
        return list(
            (
                await s.execute(
                    select(WF)
                    .where(
                        WF.c.trigger_command.in_(sorted(commands)), WF.c.on_status == outcome, WF.c.enabled.is_(True)
                    )
                    .order_by(WF.c.id)
                )
            )
            .mappings()
            .all()
        )

    async def fire(
        self,
        s: AsyncSession,
        trigger: Any,
        outcome: str,
        *,
        principal: Principal | None = None,
        origin: Origin | None = None,
        actor: str | None = None,
        rules: list[Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Apply every enabled rule for ``outcome`` of ``trigger``; returns one record per rule."""
        if rules is None:
            rules = await self.rules_for(s, {trigger["command"]}, outcome)
        rules = [
            r
            for r in rules
            if r["trigger_command"] == trigger["command"]
            and r["on_status"] == outcome
            and r["trigger_target"] in (None, trigger["target_system"])
        ]
        if not rules:
            return []
        fired = set(
            (await s.execute(select(F.c.workflow_id).where(F.c.trigger_command_id == trigger["id"]))).scalars().all()
        )
        who = {"principal": principal, "origin": origin, "actor": actor or (None if principal else "system:workflows")}
        out = []
        for rule in rules:
            if rule["id"] in fired:
                continue
            try:
                # One savepoint per rule: a failed statement (PostgreSQL aborts the whole
                # transaction otherwise) costs this firing only, not the trigger's outcome.
                async with s.begin_nested():
                    out.append(await self._fire_one(s, rule, trigger, outcome, who))
            except Exception as exc:  # noqa: BLE001 - recorded as the firing's outcome below
                out.append(await self._firing_failed(s, rule, trigger, exc, who))
        return out

    async def _firing_failed(
        self, s: AsyncSession, rule: Any, trigger: Any, exc: Exception, who: dict[str, Any]
    ) -> dict[str, Any]:
        """Record a firing that failed unexpectedly (its savepoint is rolled back already)."""
        base = {"workflow_id": rule["id"], "workflow": rule["name"], "trigger_command_id": trigger["id"]}
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        detail = storable_text(f"the firing failed: {type(cause).__name__}: {cause}")[:1000]
        log.warning("workflow %s on command %s: %s", rule["id"], trigger["id"], detail)
        try:
            async with s.begin_nested():
                await self._record(s, rule, trigger, "error", detail, None)
                await record_audit(
                    s, entity="workflow", entity_id=rule["id"], action="error", change={**base, "reason": detail}, **who
                )
        except Exception:  # noqa: BLE001 - even the record failed: the log line above is what remains
            log.exception(
                "workflow %s on command %s: the failed firing could not be recorded", rule["id"], trigger["id"]
            )
        return {**base, "outcome": "error", "detail": detail}

    async def _fire_one(
        self, s: AsyncSession, rule: Any, trigger: Any, outcome: str, who: dict[str, Any]
    ) -> dict[str, Any]:
        depth = (trigger["workflow_depth"] or 0) + 1
        base = {"workflow_id": rule["id"], "workflow": rule["name"], "trigger_command_id": trigger["id"]}
        if depth > self.settings.workflow_max_depth:
            return await self._stop_deep_chain(s, rule, trigger, depth, base, who)
        try:
            params = await _render_params(rule, trigger, outcome, self._renderer())
        except (TemplateRenderError, ValueError, TypeError) as exc:
            why = str(exc) if isinstance(exc, TemplateRenderError) else f"{type(exc).__name__}: {exc}"
            detail = storable_text(f"params template failed: {why}")[:1000]
            await self._record(s, rule, trigger, "error", detail, None)
            await record_audit(
                s,
                entity="workflow",
                entity_id=rule["id"],
                action="template_error",
                change={**base, "reason": detail},
                **who,
            )
            return {**base, "outcome": "error", "detail": detail}
        now = utcnow()
        new = NewCommand(
            target_system=rule["action_target"],
            command=rule["action_command"],
            params=params,
            args=[],
            idempotency_key=f"wf:{rule['id']}:{trigger['id']}",
            origin="workflow",
            not_before=now + timedelta(seconds=rule["delay_seconds"] or 0),
            parent_command_id=trigger["id"],
            workflow_id=rule["id"],
            workflow_depth=depth,
            created_by=f"workflow:{rule['id']}",
        )
        try:
            row, _created = await self.queue.insert(s, new, **who)
        except Rejected as exc:
            return await self._rejected(s, rule, trigger, params, exc, base, who)
        await self._record(s, rule, trigger, "enqueued", None, row["id"])
        return {**base, "outcome": "enqueued", "follow_command_id": row["id"]}

    async def _stop_deep_chain(
        self, s: AsyncSession, rule: Any, trigger: Any, depth: int, base: dict[str, Any], who: dict[str, Any]
    ) -> dict[str, Any]:
        chain = await self._chain(s, trigger)
        detail = (
            f"stopped: the chain is {depth - 1} workflow steps deep"
            f" (commands.workflow_max_depth = {self.settings.workflow_max_depth})"
        )
        await self._record(s, rule, trigger, "depth_limit", detail, None)
        await record_audit(
            s,
            entity="workflow",
            entity_id=rule["id"],
            action="stopped",
            change={**base, "reason": detail, "chain": chain},
            **who,
        )
        return {**base, "outcome": "depth_limit", "detail": detail}

    async def _rejected(
        self,
        s: AsyncSession,
        rule: Any,
        trigger: Any,
        params: dict[str, Any],
        exc: Rejected,
        base: dict[str, Any],
        who: dict[str, Any],
    ) -> dict[str, Any]:
        detail = storable_text(f"refused by the whitelist: {exc}")[:1000]
        await self._record(s, rule, trigger, "rejected", detail, None)
        # The refused params are quoted only when they can be stored: a NUL byte or a
        # non-finite number would make the audit insert (and the transaction) fail.
        ok, why = storable_json(params, "/params")
        shown = {"params": params} if ok else {"params": None, "params_not_stored": why}
        await record_audit(
            s,
            entity="workflow",
            entity_id=rule["id"],
            action="rejected",
            change={**base, "reason": detail, **shown},
            **who,
        )
        return {**base, "outcome": "rejected", "detail": detail}

    async def _record(
        self, s: AsyncSession, rule: Any, trigger: Any, outcome: str, detail: str | None, follow_id: int | None
    ) -> None:
        await s.execute(
            insert(F).values(
                workflow_id=rule["id"],
                trigger_command_id=trigger["id"],
                follow_command_id=follow_id,
                outcome=outcome,
                detail=detail,
                created_at=utcnow(),
            )
        )

    async def _chain(self, s: AsyncSession, trigger: Any) -> list[dict[str, Any]]:
        """The commands that led here, oldest first (bounded by the depth limit)."""
        chain = [{"id": trigger["id"], "command": trigger["command"], "target": trigger["target_system"]}]
        parent = trigger["parent_command_id"]
        for _ in range(self.settings.workflow_max_depth + 1):
            if parent is None:
                break
            row = (
                await s.execute(
                    select(T.c.id, T.c.command, T.c.target_system, T.c.parent_command_id).where(T.c.id == parent)
                )
            ).first()
            if row is None:
                break
            chain.append({"id": row.id, "command": row.command, "target": row.target_system})
            parent = row.parent_command_id
        return list(reversed(chain))
