"""The kernel's own HTTP routes: health, metrics, keys, audit, plugins, jobs."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from sqlalchemy import select, text

from chronos import __version__, metrics
from chronos.audit import record_audit
from chronos.auth import Principal, Public, authenticate, current_context, origin_of, require_scope
from chronos.context import PluginContext
from chronos.db.models import AuditEntry, JobHeartbeat, JobRun
from chronos.errors import Problem, ProblemModel
from chronos.host import PluginStatus
from chronos.jobs import JobBusy, JobRunner, current_leader, leader_window_seconds
from chronos.keys import SYSTEM_RE, create_key, key_view, list_keys, revoke_key
from chronos.pagination import decode_cursor, encode_cursor
from chronos.records import HealthResult, HealthStatus, JobTrigger
from chronos.runtime import Runtime
from chronos.sync_api import router as sync_router, sync_health

SystemId = Annotated[str, StringConstraints(pattern=SYSTEM_RE)]


def _iso_datetime(value: Any) -> Any:
    # pydantic alone also takes "0.5" as a Unix timestamp; the API promises ISO 8601 with an offset.
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO 8601 date-time with offset, e.g. 2026-01-01T00:00:00Z") from None
        if parsed.tzinfo is None:
            raise ValueError("the date-time needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
        return parsed
    return value


#: A date-time parameter: ISO 8601 with an offset, nothing else.
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime)]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    scopes: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(min_length=1, max_length=50)
    systems: list[SystemId] = Field(default_factory=list, max_length=50)
    expires_in_seconds: int | None = Field(None, ge=60, le=10 * 365 * 86400)


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    systems: list[str]
    status: Literal["active", "revoked", "expired"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyOut):
    secret: str = Field(description="Shown once; store it now.")


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str | None
    scope: str | None
    entity: str
    entity_id: str | None
    action: str
    change: Any
    ip: str | None
    request_id: str | None
    hash: str


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


class JobRunSummary(BaseModel):
    status: Literal["running", "ok", "error", "cancelled", "interrupted"]
    trigger: JobTrigger
    started_at: datetime
    finished_at: datetime | None
    error: str | None


class JobOut(BaseModel):
    name: str
    plugin: str
    schedule: str | None
    running: bool
    description: str
    last_run: JobRunSummary | None


class JobStarted(BaseModel):
    job: str
    status: Literal["started"]


class PluginRecords(BaseModel):
    """The names of the records a plugin contributed, by kind."""

    settings: list[str] = []
    scopes: list[str] = []
    routers: list[str] = []
    migrations: list[str] = []
    jobs: list[str] = []
    cli: list[str] = []
    services: list[str] = []
    resources: list[str] = []
    health_checks: list[str] = []
    schemas: list[str] = []
    sources: list[str] = []
    normalizers: list[str] = []
    enrichers: list[str] = []
    sinks: list[str] = []
    delivery_targets: list[str] = Field([], description="Outbox delivery targets (channels) the plugin registers")
    web_assets: list[str] = Field(
        [], description="Browser files the plugin serves (a panel.js among them is a dashboard panel)"
    )


class PluginOut(BaseModel):
    name: str
    distribution: str | None
    version: str | None
    status: PluginStatus
    error: str | None
    hooks: list[str]
    records: PluginRecords
    routes: list[str] = Field(description="METHOD /path of every route the plugin mounts")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


# -- health and metrics ------------------------------------------------------------


async def _timed(name: str, coro: Any, timeout: float = 2.0) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        result: HealthResult = await asyncio.wait_for(coro, timeout)
        out = {"status": result.status, **result.detail}
    except TimeoutError:
        out = {"status": "error", "error": f"no answer within {timeout:g}s"}
    except Exception as exc:  # noqa: BLE001 - a failing check is reported, not raised
        out = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
    out["duration_ms"] = round((time.perf_counter() - start) * 1000, 2)
    return out


async def _check_database(ctx: Any) -> HealthResult:
    await ctx.db.ping()
    return HealthResult("ok", {"dialect": ctx.db.dialect})


async def _check_search(ctx: Any) -> HealthResult:
    async with ctx.db.read() as s:
        if ctx.db.is_sqlite:
            await s.execute(text("CREATE VIRTUAL TABLE IF NOT EXISTS temp.chronos_fts_probe USING fts5(x)"))
            return HealthResult("ok", {"engine": "fts5"})
        probe = text("SELECT to_tsvector('simple', 'chronos') @@ plainto_tsquery('simple', 'chronos')")
        ok = (await s.execute(probe)).scalar()
        return HealthResult("ok" if ok else "degraded", {"engine": "tsvector"})


async def _check_jobs(ctx: Any) -> HealthResult:
    """The job runners: ``runners`` counts the live ones (heartbeat at most one interval late, as
    for naming the leader); rows of runners that stopped beating (killed processes leave theirs)
    are counted apart as ``stale_runners``."""
    scheduler = ctx.settings.kernel.scheduler
    stale_after = scheduler.heartbeat_stale_seconds
    async with ctx.db.read() as s:
        beats = (await s.execute(select(JobHeartbeat.beat_at))).scalars().all()
        leader = await current_leader(s, ctx.db, heartbeat_seconds=scheduler.heartbeat_seconds)
    if not beats:
        return HealthResult(
            "degraded", {"detail": "no job runner has reported; start `chronos worker` or serve with jobs"}
        )
    now = datetime.now(UTC)
    live_since = now - timedelta(seconds=leader_window_seconds(scheduler.heartbeat_seconds))
    live = sum(1 for beat in beats if beat >= live_since)
    age = (now - max(beats)).total_seconds()
    detail = {
        "heartbeat_age_seconds": round(age, 1),
        "runners": live,
        "stale_runners": len(beats) - live,
        "leader": leader,
    }
    if age > stale_after:
        return HealthResult("error", {**detail, "detail": f"last heartbeat older than {stale_after:g}s"})
    return HealthResult("ok", detail)


async def _detailed_health(request: Request) -> bool:
    """True for a key with ``health.read`` (``admin`` implies it); no key: False; an invalid key: 401."""
    if not (request.headers.get("authorization") or request.headers.get("x-api-key")):
        return False
    principal = await authenticate(request)
    return principal.has("health.read")


async def health(request: Request) -> JSONResponse:
    """Without a key: ``status`` and each check's status (what a load balancer needs). With a key holding
    ``health.read``: the detailed report (errors, versions, calendars, plugins, runner hosts)."""
    detailed = await _detailed_health(request)
    ctx = current_context(request)
    host = _runtime(request).host
    checks: dict[str, dict[str, Any]] = {}
    checks["database"] = await _timed("database", _check_database(ctx))
    db_ok = checks["database"]["status"] == "ok"
    if db_ok:
        checks["search"] = await _timed("search", _check_search(ctx))
        checks["jobs"] = await _timed("jobs", _check_jobs(ctx))
        runtime = _runtime(request)
        checks["sync"] = await _timed("sync", sync_health(ctx, runtime.pipeline if runtime.started else None))
    plugin_states = {p["name"]: p["status"] for p in host.describe()}
    failed = [n for n, s in plugin_states.items() if s == "failed"]
    checks["plugins"] = {"status": "degraded" if failed else "ok", "plugins": plugin_states}
    critical_error = not db_ok or checks.get("jobs", {}).get("status") == "error"
    if db_ok:
        for plugin, hc in host.health_checks():
            res = await _timed(hc.name, hc.func(ctx))
            res["plugin"] = plugin
            checks[hc.name] = res
            if hc.critical and res["status"] == "error":
                critical_error = True
    if critical_error:
        status, code = "error", 503
    elif any(c.get("status") != "ok" for c in checks.values()):
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    if not detailed:
        minimal = {name: {"status": check.get("status")} for name, check in checks.items()}
        return JSONResponse({"status": status, "checks": minimal}, status_code=code)
    # pid: which process answered, when `chronos serve --workers N` shares one port among several.
    report = {"status": status, "version": __version__, "pid": os.getpid(), "checks": checks}
    return JSONResponse(report, status_code=code)


class HealthCheckOut(BaseModel):
    """One check's result. Without a key only ``status``; in the detailed report each check adds
    fields of its own (counts, ages, the plugin that registered it, an ``error`` when it failed)."""

    model_config = ConfigDict(extra="allow")

    status: HealthStatus
    duration_ms: float | None = Field(None, description="How long the check took (detailed report).")
    plugin: str | None = Field(None, description="The plugin that registered the check, for plugin checks.")
    error: str | None = Field(None, description="Why the check failed or gave no answer in time.")


class HealthReport(BaseModel):
    """``ok``, ``degraded`` (answers 200) or ``error`` (answers 503), and every check by name."""

    status: HealthStatus
    version: str | None = Field(None, description="The kernel's version (detailed report).")
    pid: int | None = Field(None, description="The process that answered (detailed report).")
    checks: dict[str, HealthCheckOut]


class Liveness(BaseModel):
    status: Literal["ok"] = Field(description="The process answers; nothing else is checked.")


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    detail: str | None = Field(None, description="Why the instance should not get traffic, when it should not.")


async def health_live() -> Liveness:
    """Liveness for orchestrators: the process and its event loop answer. No database access, so a
    database outage never restarts every replica at once."""
    return Liveness(status="ok")


async def health_ready(request: Request) -> JSONResponse:
    """Readiness for load balancers: started (plugins loaded, migrations applied), not shutting down,
    and the database answers within two seconds. 503 otherwise: send this instance no traffic."""
    runtime = _runtime(request)
    detail: str | None = None
    if not runtime.started:
        detail = "starting or shutting down"
    else:
        check = await _timed("database", _check_database(current_context(request)))
        if check["status"] != "ok":
            detail = f"database: {check.get('error', check['status'])}"
    body = Readiness(status="not_ready" if detail else "ready", detail=detail)
    return JSONResponse(body.model_dump(), status_code=503 if detail else 200)


async def metrics_endpoint() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


# -- keys ----------------------------------------------------------------------------

keys_router = APIRouter(prefix="/keys", tags=["keys"])
ADMIN = Depends(require_scope("admin"))


@keys_router.post("", status_code=201, response_model=KeyCreated)
async def create_key_route(body: KeyCreate, request: Request, principal: Principal = ADMIN) -> dict[str, Any]:
    ctx = current_context(request)
    from datetime import timedelta

    expires = timedelta(seconds=body.expires_in_seconds) if body.expires_in_seconds else None
    async with ctx.db.write() as s:
        row, secret = await create_key(
            s,
            name=body.name,
            scopes=body.scopes,
            known_scopes=ctx.scopes,
            systems=body.systems,
            expires_in=expires,
            max_lifetime_days=ctx.settings.kernel.auth.max_key_lifetime_days,
            created_by=principal.key_id,
        )
        view = key_view(row)
        await record_audit(
            s,
            entity="api_key",
            entity_id=row.id,
            action="create",
            change={k: v for k, v in view.items() if k in ("name", "scopes", "systems", "expires_at")},
            principal=principal,
            origin=origin_of(request),
        )
    return {**view, "secret": secret}


@keys_router.get("", response_model=list[KeyOut])
async def list_keys_route(request: Request, _: Principal = ADMIN) -> list[dict[str, Any]]:
    async with current_context(request).db.read() as s:
        return [key_view(r) for r in await list_keys(s)]


@keys_router.delete(
    "/{key_id}",
    response_model=KeyOut,
    responses={
        409: {
            "model": ProblemModel,
            "description": "The key makes this request (repeat with force=true), or it is the bootstrap key"
            " from CHRONOS_ADMIN_KEY, which only its environment can retire",
        }
    },
)
async def revoke_key_route(
    key_id: Annotated[str, StringConstraints(max_length=64)],
    request: Request,
    principal: Principal = ADMIN,
    force: Annotated[
        bool, Query(description="Revoke the key even when it is the one making this request (locks this client out).")
    ] = False,
) -> dict[str, Any]:
    async with current_context(request).db.write() as s:
        row = await revoke_key(s, key_id, requester=principal.key_id, force=force)
        if row is None:
            raise Problem(404, f"No key with id {key_id!r}", type="not-found")
        await record_audit(
            s, entity="api_key", entity_id=key_id, action="revoke", principal=principal, origin=origin_of(request)
        )
        view = key_view(row)
    _runtime(request).keys.forget(key_id)
    return view


# -- audit ---------------------------------------------------------------------------

audit_router = APIRouter(prefix="/audit", tags=["audit"])


@audit_router.get("", response_model=AuditPage)
async def audit_list(
    request: Request,
    _: Principal = ADMIN,
    entity: Annotated[str | None, Query(max_length=64)] = None,
    entity_id: Annotated[str | None, Query(max_length=128)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    for col, val in (
        (AuditEntry.entity, entity),
        (AuditEntry.entity_id, entity_id),
        (AuditEntry.actor, actor),
        (AuditEntry.action, action),
    ):
        if val is not None:
            q = q.where(col == val)
    for bound, op in ((since, "ge"), (until, "lt")):
        if bound is not None:
            if bound.tzinfo is None:
                raise Problem(
                    422,
                    "since/until need a UTC offset (e.g. 2026-01-01T00:00:00Z)",
                    type="validation",
                    errors=[{"pointer": "/query/since" if op == "ge" else "/query/until", "detail": "missing offset"}],
                )
            q = q.where(AuditEntry.at >= bound if op == "ge" else AuditEntry.at < bound)
    if cursor:
        (last_id,) = decode_cursor("audit", cursor, [int])
        q = q.where(AuditEntry.id < last_id)
    async with current_context(request).db.read() as s:
        rows = (await s.execute(q)).scalars().all()
    items = rows[:limit]
    nxt = encode_cursor("audit", [items[-1].id]) if len(rows) > limit else None
    return {"items": [AuditOut.model_validate(r, from_attributes=True) for r in items], "next_cursor": nxt}


# -- plugins and jobs ----------------------------------------------------------------

meta_router = APIRouter(tags=["plugins"])


@meta_router.get("/plugins", response_model=list[PluginOut])
async def plugins_list(request: Request, _: Principal = ADMIN) -> list[dict[str, Any]]:
    return _runtime(request).host.describe()


@meta_router.get("/scopes")
async def scopes_list(request: Request, _: Principal = ADMIN) -> dict[str, str]:
    return dict(sorted(current_context(request).scopes.items()))


def _schedule(job: Any) -> str | None:
    if job.cron:
        return f"cron {job.cron}"
    if job.interval_seconds:
        return f"every {job.interval_seconds:g}s"
    return None


def _job_runner(ctx: PluginContext) -> JobRunner:
    if ctx.jobs is None:  # only before the lifespan started the runtime
        raise Problem(503, "The job runner is not running", type="unavailable")
    return ctx.jobs


@meta_router.get("/jobs", response_model=list[JobOut])
async def jobs_list(request: Request, _: Principal = ADMIN) -> list[dict[str, Any]]:
    ctx = current_context(request)
    runner = _job_runner(ctx)
    out = []
    async with ctx.db.read() as s:
        for name, (plugin, job) in sorted(runner.jobs.items()):
            last = (
                await s.execute(select(JobRun).where(JobRun.job == name).order_by(JobRun.id.desc()).limit(1))
            ).scalar()
            task = runner.running.get(name)
            out.append(
                {
                    "name": name,
                    "plugin": plugin,
                    "schedule": _schedule(job),
                    "description": job.description,
                    "running": bool(task and not task.done()),
                    "last_run": None
                    if last is None
                    else {
                        "status": last.status,
                        "trigger": last.trigger,
                        "started_at": last.started_at,
                        "finished_at": last.finished_at,
                        "error": last.error,
                    },
                }
            )
    return out


@meta_router.post(
    "/jobs/{name}/run",
    status_code=202,
    response_model=JobStarted,
    responses={409: {"model": ProblemModel, "description": "The job is running already"}},
)
async def jobs_run(
    name: Annotated[str, StringConstraints(max_length=128)], request: Request, principal: Principal = ADMIN
) -> dict[str, Any]:
    ctx = current_context(request)
    runner = _job_runner(ctx)
    if name not in runner.jobs:
        raise Problem(404, f"No job named {name!r}", type="not-found")
    async with ctx.db.read() as s:
        elsewhere = await runner.running_elsewhere(s, name)
    if elsewhere is not None:
        raise Problem(409, f"job {name!r} is running in another process ({elsewhere})", type="job-busy")
    try:
        runner.run_now(name)
    except JobBusy as exc:
        raise Problem(409, str(exc), type="job-busy") from None
    async with ctx.db.write() as s:
        await record_audit(
            s, entity="job", entity_id=name, action="run", principal=principal, origin=origin_of(request)
        )
    return {"job": name, "status": "started"}


# -- documentation ----------------------------------------------------------------

#: Swagger UI 5 and ReDoc 2, served by the service itself (no CDN): the files of the
#: pinned ``fastapi-offline`` distribution (requirements.lock), read in place.
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
DOCS_ASSET_PATH = "/docs/assets"


def _docs_asset_dir() -> Any:
    import importlib.resources

    return importlib.resources.files("fastapi_offline") / "static"


async def docs_asset(name: str) -> Response:
    if name not in DOCS_ASSETS:
        raise Problem(404, f"No documentation asset {name!r}", type="not-found")
    path = _docs_asset_dir() / name
    return FileResponse(str(path), headers={"Cache-Control": "public, max-age=86400"})


async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API documentation",
        swagger_js_url=f"{DOCS_ASSET_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSET_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSET_PATH}/favicon.png",
        oauth2_redirect_url="/docs/oauth2-redirect",
        # Swagger UI would otherwise send the document to a public validator.
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
    )


async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API reference",
        redoc_js_url=f"{DOCS_ASSET_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{DOCS_ASSET_PATH}/favicon.png",
        with_google_fonts=False,
    )


def mount_docs(app: FastAPI, home: str = "/docs") -> None:
    """``/docs`` (Swagger UI), ``/redoc`` and their assets, all served locally; ``/`` points to ``home``.

    The app is created with ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages never mount.
    ``home`` is ``/docs`` unless a plugin's web assets ask to be the home page (the dashboard).
    """

    async def root() -> RedirectResponse:
        return RedirectResponse(home, status_code=307)

    public = [Depends(Public("the API documentation is public, like /openapi.json"))]
    for path, endpoint in (
        ("/", root),
        ("/docs", swagger_ui),
        ("/docs/oauth2-redirect", swagger_ui_redirect),
        ("/redoc", redoc),
        (DOCS_ASSET_PATH + "/{name}", docs_asset),
    ):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False, dependencies=public)


def mount_kernel_routes(app: FastAPI, home: str = "/docs") -> None:
    public = [Depends(Public("health and metrics are unauthenticated"))]
    app.add_api_route(
        "/health",
        health,
        methods=["GET"],
        tags=["health"],
        dependencies=public,
        response_model=HealthReport,
        responses={
            503: {"model": HealthReport, "description": "The database is unreachable or the job runner is stale"}
        },
    )
    app.add_api_route(
        "/health/live", health_live, methods=["GET"], tags=["health"], dependencies=public, response_model=Liveness
    )
    app.add_api_route(
        "/health/ready",
        health_ready,
        methods=["GET"],
        tags=["health"],
        dependencies=public,
        response_model=Readiness,
        responses={
            503: {
                "model": Readiness,
                "description": "Not ready: starting, shutting down or the database is unreachable",
            }
        },
    )
    app.add_api_route(
        "/metrics", metrics_endpoint, methods=["GET"], tags=["health"], dependencies=public, response_class=Response
    )
    for router in (keys_router, audit_router, meta_router, sync_router):
        app.include_router(router, prefix="/api/v1")
    mount_docs(app, home)
