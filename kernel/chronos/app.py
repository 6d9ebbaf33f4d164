"""The app factory: settings -> plugin host -> FastAPI app with a lifespan."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chronos import __version__, metrics
from chronos.auth import Public, RequireScope
from chronos.context import PluginContext
from chronos.db.migrate import migrate
from chronos.errors import Problem, ProblemModel, install_handlers, problem_response
from chronos.host import PluginError, PluginHost, PluginSpec
from chronos.jobs import JobRunner
from chronos.logs import configure_logging
from chronos.settings import Settings, load_settings

API_PREFIX = "/api/v1"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
log = structlog.get_logger("chronos.app")


class RequestContextMiddleware:
    """Request id in and out, size limits, access log and metrics (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, max_body: int, max_headers: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        headers = scope.get("headers") or []
        incoming = ""
        header_bytes = 0
        declared_length = None
        for k, v in headers:
            header_bytes += len(k) + len(v)
            if k == b"x-request-id":
                incoming = v.decode("latin-1")
            elif k == b"content-length":
                try:
                    declared_length = int(v)
                except ValueError:
                    declared_length = -1
        request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        start = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                hdrs = list(message.get("headers", []))
                hdrs.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": hdrs}
            await send(message)

        try:
            problem = None
            if header_bytes > self.max_headers:
                problem = Problem(431, f"Request headers exceed {self.max_headers} bytes", title="Request Header Fields Too Large")
            elif declared_length is not None and declared_length < 0:
                problem = Problem(400, "Content-Length is not a number")
            elif declared_length is not None and declared_length > self.max_body:
                problem = Problem(413, f"Request body exceeds {self.max_body} bytes")
            if problem is not None:
                await problem_response(problem, Request(scope))(scope, receive, send_wrapper)
                return
            await self.app(scope, self._limited(receive), send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            elapsed = time.perf_counter() - start
            metrics.HTTP_REQUESTS.labels(scope["method"], template, str(status_holder["status"])).inc()
            metrics.HTTP_LATENCY.labels(template).observe(elapsed)
            structlog.contextvars.unbind_contextvars("request_id")

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise Problem(413, f"Request body exceeds {limit} bytes")
            return message

        return wrapped


def route_scope(route: APIRoute) -> tuple[bool, str | None]:
    """(declared, scope) for a route: found a RequireScope or Public dependency."""
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        call = dep.call
        if isinstance(call, RequireScope):
            return True, call.scope
        if isinstance(call, Public):
            return True, None
        stack.extend(dep.dependencies)
    return False, None


def create_app(
    settings: Settings | None = None,
    plugins: Iterable[PluginSpec] | None = None,
    *,
    run_jobs: bool | None = None,
    env: Mapping[str, str] | None = None,
) -> FastAPI:
    """Build the app. Nothing runs until the ASGI lifespan starts it.

    ``plugins`` overrides discovery: entry-point names, or ``(name, object)``
    pairs for plugins defined in-process (tests). ``run_jobs=False`` serves the
    API only (``chronos serve --no-jobs``).
    """
    settings = settings or load_settings(env=env)
    configure_logging(settings.kernel.logging.level, settings.kernel.logging.format)
    ctx = PluginContext(settings)
    host = PluginHost(settings, plugins, env=env)
    host.load(ctx)
    ctx.state["host"] = host
    ctx.state["scopes"] = host.scopes()
    jobs_enabled = settings.kernel.scheduler.enabled if run_jobs is None else run_jobs

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dbs = settings.kernel.database
        if dbs.migrate_on_start:
            await migrate(dbs.url, [m for _, m in host.get("register_migrations")], schema=dbs.schema_name)
        for _plugin, svc in host.get("register_services"):
            ctx._services[svc.interface] = svc.factory(ctx)
        runner = JobRunner(ctx, host.get("register_jobs"))
        ctx.jobs = runner
        try:
            await host.startup(ctx)
            await runner.start(schedules=jobs_enabled)
            log.info("started", plugins=host.enabled(), jobs=jobs_enabled, version=__version__)
            yield
        finally:
            await runner.stop()
            await host.shutdown(ctx)
            if ctx.has_db:
                await ctx.db.dispose()

    app = FastAPI(
        title="Chronos Engine",
        version=__version__,
        lifespan=lifespan,
        responses={
            400: {"model": ProblemModel, "description": "Malformed request"},
            401: {"model": ProblemModel, "description": "Missing, unknown, revoked or expired key"},
            403: {"model": ProblemModel, "description": "The key lacks the required scope"},
            413: {"model": ProblemModel, "description": "Request body too large"},
            422: {"model": ProblemModel, "description": "Invalid request"},
            431: {"model": ProblemModel, "description": "Request headers too large"},
        },
    )
    app.state.chronos = ctx
    install_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_body=settings.kernel.server.max_body_bytes,
        max_headers=settings.kernel.server.max_header_bytes,
    )

    from chronos import api

    api.mount_kernel_routes(app)
    mount_plugin_routers(app, host, ctx)
    return app


def mount_plugin_routers(app: FastAPI, host: PluginHost, ctx: PluginContext) -> None:
    taken: dict[tuple[str, str], str] = {}
    for route in app.routes:
        if isinstance(route, APIRoute):
            for method in route.methods:
                taken[(method, route.path)] = "kernel"
    scopes = ctx.state["scopes"]
    for plugin, rec in host.get("register_routers"):
        for route in rec.router.routes:
            if not isinstance(route, APIRoute):
                continue
            path = API_PREFIX + route.path
            declared, scope = route_scope(route)
            if not declared:
                raise PluginError(
                    f"plugin {plugin!r}: route {sorted(route.methods)} {path} declares no scope;"
                    " add Depends(require_scope(...))"
                )
            if scope is not None and scope not in scopes:
                raise PluginError(f"plugin {plugin!r}: route {path} requires unregistered scope {scope!r}")
            for method in route.methods:
                if (method, path) in taken:
                    raise PluginError(
                        f"route {method} {path} is mounted by both {taken[(method, path)]!r} and {plugin!r}"
                    )
                taken[(method, path)] = plugin
                host.infos[plugin].routes.append(f"{method} {path}")
        app.include_router(rec.router, prefix=API_PREFIX)


def describe_plugins(host: PluginHost) -> list[dict[str, Any]]:
    """One introspection function for ``GET /api/v1/plugins`` and ``chronos plugins``."""
    return host.describe()
