"""The app factory: settings -> plugin host -> FastAPI app with a lifespan."""

from __future__ import annotations

import ipaddress
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chronos import __version__, api, metrics
from chronos.auth import authenticate, route_scope
from chronos.contracts.outbox import SignedAnswer
from chronos.errors import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    ProblemModel,
    install_handlers,
    problem_response,
    unhandled_response,
)
from chronos.host import PluginError, PluginSpec
from chronos.logs import configure_logging
from chronos.openapi import finish_document, move_definitions
from chronos.routes import effective_routes
from chronos.runtime import Runtime
from chronos.settings import Settings, load_settings
from chronos.sync_api import document_sync_request, source_calendars

API_PREFIX = "/api/v1"
#: A client's X-Request-ID is kept only when it matches in full (``$`` alone would let a trailing newline in).
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
log = structlog.get_logger("chronos.app")
access_log = structlog.get_logger("chronos.access")


class RequestContextMiddleware:
    """Request id in and out, size limits, access log and metrics (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, max_body: int, max_headers: int, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log
        self.max_body = max_body
        self.max_headers = max_headers
        self._templates: list[tuple[Any, str]] | None = None

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
        request_id = incoming if REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        start = time.perf_counter()
        status_holder = {"status": 500, "started": False}
        answer: list[bytes] | None = None  # the body of a signed request's first answer, kept for replays
        media_type = "application/json"

        async def send_wrapper(message: Message) -> None:
            nonlocal answer, media_type
            if message["type"] == "http.response.start":
                status_holder["status"], status_holder["started"] = message["status"], True
                hdrs = list(message.get("headers", []))
                hdrs.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": hdrs}
                if scope["state"].get("signed_receipt") is not None:
                    answer = []
                    media_type = dict(hdrs).get(b"content-type", b"application/json").decode("latin-1")
            elif message["type"] == "http.response.body" and answer is not None:
                answer.append(message.get("body", b""))
            await send(message)

        try:
            problem = None
            if header_bytes > self.max_headers:
                problem = Problem(
                    431, f"Request headers exceed {self.max_headers} bytes", title="Request Header Fields Too Large"
                )
            elif declared_length is not None and declared_length < 0:
                problem = Problem(400, "Content-Length is not a number")
            elif declared_length is not None and declared_length > self.max_body:
                problem = Problem(413, f"Request body exceeds {self.max_body} bytes")
            if problem is not None:
                await problem_response(problem, Request(scope))(scope, receive, send_wrapper)
                return
            await self.app(scope, self._limited(receive), send_wrapper)
        except Exception as exc:
            # Answered here rather than by Starlette's outermost error middleware so
            # the 500 carries X-Request-ID, is logged with it and is counted.
            if status_holder["started"]:
                raise
            await unhandled_response(Request(scope), exc)(scope, receive, send_wrapper)
        finally:
            receipt = scope["state"].pop("signed_receipt", None)
            if receipt is not None:
                await _remember_answer(receipt, status_holder["status"], b"".join(answer or []), media_type)
            template = self._template(scope)
            elapsed = time.perf_counter() - start
            metrics.HTTP_REQUESTS.labels(scope["method"], template, str(status_holder["status"])).inc()
            metrics.HTTP_LATENCY.labels(template).observe(elapsed)
            if self.access_log:
                principal = (scope.get("state") or {}).get("principal")
                access_log.info(
                    "request",
                    method=scope["method"],
                    path=scope.get("path", ""),  # never the query string: it may carry tokens
                    status=status_holder["status"],
                    duration_ms=round(elapsed * 1000, 2),
                    request_id=request_id,
                    key_id=getattr(principal, "key_id", None),
                )
            structlog.contextvars.unbind_contextvars("request_id")

    def _template(self, scope: Scope) -> str:
        """The matched route's full path template (a bounded metrics label)."""
        if scope.get("route") is None or scope.get("app") is None:
            return "<unmatched>"
        if self._templates is None:
            # scope["route"] of an included router's route lacks the include prefix.
            self._templates = [
                (r.path_regex, r.path) for r in effective_routes(scope["app"].routes) if getattr(r, "path_regex", None)
            ]
        path = scope.get("path", "")
        return next((template for regex, template in self._templates if regex.match(path)), "<unmatched>")

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException passes through FastAPI's body parsing untouched
                    # (anything else there becomes a generic 400).
                    raise StarletteHTTPException(413, f"Request body exceeds {limit} bytes")
            return message

        return wrapped


async def _remember_answer(receipt: Any, status: int, body: bytes, media_type: str) -> None:
    """Store a signed request's first answer (``SignedRequests.remember``); a failure only costs the replay."""
    verifier, call = receipt
    try:
        await verifier.remember(call, SignedAnswer(status, body, media_type))
    except Exception as exc:  # noqa: BLE001 - the answer is sent; only its record for replays is lost
        structlog.get_logger("chronos.auth").warning("signed_answer_not_stored", error=str(exc))


def _is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def private_paths(settings: Settings) -> tuple[str, ...]:
    """The unauthenticated endpoints the settings keep private: they need ``admin`` or ``metrics.read``."""
    server = settings.kernel.server
    metrics_public = _is_loopback(server.host) if server.public_metrics == "loopback" else server.public_metrics
    out: list[str] = [] if metrics_public else ["/metrics"]
    if not server.public_docs:
        out += ["/openapi.json", "/docs", "/redoc"]
    return tuple(out)


class PrivateEndpointsMiddleware:
    """``/metrics`` and the API documentation behind a key when the settings say so (any way they are served)."""

    SCOPE = "metrics.read"

    def __init__(self, app: ASGIApp, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = paths

    def _private(self, path: str) -> bool:
        if path.startswith("/docs/assets/"):  # the documentation's static files hold nothing of this service
            return False
        return any(path == p or path.startswith(p + "/") for p in self.paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.paths or not self._private(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        request = Request(scope)
        try:
            principal = await authenticate(request)
            if not principal.has(self.SCOPE):
                raise Problem(
                    403, f"This key lacks the scope {self.SCOPE!r}", type="forbidden", required_scope=self.SCOPE
                )
        except Problem as problem:
            await problem_response(problem, request)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def freeze_startup_objects() -> None:
    """Move everything start-up created (modules, plugins, models, schemas: some 250k objects) out
    of the cyclic garbage collector's reach: they live as long as the process, and every full
    collection would otherwise walk them again (a fifth of a large sync's CPU time). Only for
    processes that serve until they stop; tests build many apps and must not keep their garbage."""
    import gc

    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None,
    plugins: Iterable[PluginSpec] | None = None,
    *,
    run_jobs: bool | None = None,
    env: Mapping[str, str] | None = None,
    long_running: bool = False,
) -> FastAPI:
    """Build the app. Nothing runs until the ASGI lifespan starts it.

    ``plugins`` overrides discovery: entry-point names, or ``(name, object)``
    pairs for plugins defined in-process (tests). ``run_jobs=False`` serves the
    API only (``chronos serve --no-jobs``). ``long_running`` (``chronos serve``)
    freezes the objects of start-up once it is complete (:func:`freeze_startup_objects`).
    """
    settings = settings or load_settings(env=env)
    configure_logging(settings.kernel.logging.level, settings.kernel.logging.format)
    runtime = Runtime(settings, plugins, env=env)
    schedules = settings.kernel.scheduler.enabled if run_jobs is None else run_jobs

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(jobs="schedules" if schedules else "on_demand"):
            if long_running:
                freeze_startup_objects()
            yield

    app = FastAPI(
        title="Chronos Engine",
        version=__version__,
        lifespan=lifespan,
        # /docs and /redoc are the kernel's own pages with locally served assets (api.mount_docs).
        docs_url=None,
        redoc_url=None,
        responses={
            400: {"model": ProblemModel, "description": "Malformed request"},
            401: {"model": ProblemModel, "description": "Missing, unknown, revoked or expired key"},
            403: {"model": ProblemModel, "description": "The key lacks the required scope"},
            404: {"model": ProblemModel, "description": "No such resource"},
            413: {"model": ProblemModel, "description": "Request body too large"},
            422: {"model": ProblemModel, "description": "Invalid request"},
            431: {"model": ProblemModel, "description": "Request headers too large"},
        },
    )
    app.state.runtime = runtime
    app.state.chronos = runtime.ctx
    app.openapi = _problem_openapi(  # type: ignore[method-assign]
        app, settings, scopes=lambda: runtime.ctx.scopes, calendars=lambda: source_calendars(runtime.host)
    )
    install_handlers(app)
    # Inside the request-context middleware: its answers carry the request id and are logged.
    app.add_middleware(PrivateEndpointsMiddleware, paths=private_paths(settings))
    app.add_middleware(
        RequestContextMiddleware,
        max_body=settings.kernel.server.max_body_bytes,
        max_headers=settings.kernel.server.max_header_bytes,
        access_log=settings.kernel.logging.access_log,
    )

    api.mount_kernel_routes(app, home=web_home(runtime))
    mount_plugin_routers(app, runtime)
    mount_web_assets(app, runtime)
    return app


def _problem_openapi(
    app: FastAPI,
    settings: Settings,
    scopes: Callable[[], Iterable[str]] = tuple,
    calendars: Callable[[], Mapping[str, Sequence[str]]] = dict,
) -> Any:
    """The OpenAPI document with every error response as ``application/problem+json``.

    FastAPI documents error models under ``application/json`` and adds its own
    422 shape; the API answers every error with :class:`ProblemModel` instead.
    :func:`chronos.openapi.finish_document` writes integer bounds as integers
    and the bounds that come from settings; a key's scope names are the scopes
    registered when the app was built; a sync's source and calendar are those
    of the enabled sources (:func:`chronos.sync_api.document_sync_request`).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        problem = {"$ref": "#/components/schemas/ProblemModel"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict):
                    continue
                for code, response in operation.get("responses", {}).items():
                    if not (code.startswith(("4", "5")) or code == "default"):
                        continue
                    content = response.get("content") or {}
                    documented = (content.get("application/json") or {}).get("schema")
                    if documented is None or documented.get("$ref", "").endswith("/HTTPValidationError"):
                        documented = problem
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": documented}}
        components = schema.get("components", {}).get("schemas", {})
        move_definitions(schema)
        finish_document(schema, settings.sections)
        key_scopes = components.get("KeyCreate", {}).get("properties", {}).get("scopes", {}).get("items")
        if key_scopes is not None and (known := sorted(scopes())):
            key_scopes["enum"] = known
        if "SyncRequest" in components:
            document_sync_request(components["SyncRequest"], calendars())
        text = json.dumps(schema.get("paths", {}))
        for unused in ("HTTPValidationError", "ValidationError"):
            if unused in components and f'/{unused}"' not in text:
                del components[unused]
        return schema

    return openapi


def mount_plugin_routers(app: FastAPI, runtime: Runtime) -> None:
    host = runtime.host
    taken: dict[tuple[str, str], str] = {}
    for route in effective_routes(app.routes):
        for method in getattr(route, "methods", None) or ():
            taken[(method, route.path)] = "kernel"
    scopes = runtime.ctx.scopes
    for plugin, rec in host.routers():
        for route in effective_routes(rec.router.routes):
            path = API_PREFIX + (route.path or "")
            if not isinstance(getattr(route, "original_route", route), APIRoute):
                raise PluginError(
                    f"plugin {plugin!r}: route {path} is not an API route; only APIRouter routes, which declare"
                    " their scope with Depends(require_scope(...)), can be mounted"
                )
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


#: The headers of every web asset: scripts and styles of this origin only (no inline code, so no
#: 'unsafe-inline'), no framing by other sites, no referrer, no MIME sniffing.
WEB_ASSET_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self';"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def web_home(runtime: Runtime) -> str:
    """Where ``/`` redirects: the web assets that asked to be the home page, else ``/docs``."""
    homes = [(plugin, rec) for plugin, rec in runtime.host.web_assets() if rec.home]
    if len(homes) > 1:
        raise PluginError(f"web assets of both {homes[0][0]!r} and {homes[1][0]!r} ask to be the home page")
    return homes[0][1].url_path if homes else "/docs"


def _web_file(root: Path, file_path: str) -> Path | None:
    """The file ``file_path`` names below ``root`` (``index.html`` for a directory), or None."""
    parts = [p for p in file_path.split("/") if p]
    if any(p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        return None
    target = root.joinpath(*parts)
    if target.is_dir():
        target = target / "index.html"
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError):
        return None
    return resolved if resolved.is_file() and resolved.is_relative_to(root.resolve()) else None


def _web_endpoint(root: Path, prefix: str) -> Callable[[str], Any]:
    from fastapi.responses import FileResponse

    async def serve(file_path: str) -> FileResponse:
        target = _web_file(root, file_path)
        if target is None:
            raise Problem(404, f"No file {prefix}{file_path}", type="not-found")
        return FileResponse(target, headers=WEB_ASSET_HEADERS)

    return serve


def mount_web_assets(app: FastAPI, runtime: Runtime) -> None:
    """Serve each plugin's :class:`~chronos.records.WebAssets` at its path, with :data:`WEB_ASSET_HEADERS`."""
    from fastapi import Depends

    from chronos.auth import Public

    public = [Depends(Public("web assets hold code and styles only; the browser reads data with its own key"))]
    served: dict[str, str] = {}
    for plugin, rec in runtime.host.web_assets():
        prefix = rec.url_path
        if prefix in served:
            raise PluginError(f"web assets path {prefix} is served by both {served[prefix]!r} and {plugin!r}")
        served[prefix] = plugin
        path = prefix + "{file_path:path}"
        serve = _web_endpoint(Path(str(rec.root)), prefix)
        app.add_api_route(path, serve, methods=["GET", "HEAD"], include_in_schema=False, dependencies=public)
        runtime.host.infos[plugin].routes.append(f"GET {path}")
