"""Authentication over HTTP: who is calling, and may they use this route.

Keys themselves (secrets, verification, the bootstrap key) live in
:mod:`chronos.keys`; this module reads them from the request and turns a
missing key or scope into 401/403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer

from chronos.context import PluginContext
from chronos.contracts.outbox import SignedRequests
from chronos.errors import Problem, ReplayedAnswer
from chronos.exceptions import NotAuthenticated
from chronos.identity import Origin, Principal

__all__ = [
    "Context",
    "Principal",
    "Public",
    "RequireScope",
    "authenticate",
    "current_context",
    "origin_of",
    "require_scope",
]

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
_x_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


def current_context(request: Request) -> PluginContext:
    """The app's plugin context (FastAPI dependency; use the ``Context`` annotation)."""
    ctx: PluginContext = request.app.state.chronos
    return ctx


async def _context(request: Request) -> PluginContext:
    # A coroutine: FastAPI runs a plain-function dependency in its thread pool, a hand-off
    # on every request for one attribute read.
    return current_context(request)


#: A route parameter annotated ``ctx: Context`` receives the plugin context.
Context = Annotated[PluginContext, Depends(_context)]


def origin_of(request: Request) -> Origin:
    """The audit origin of a request: its authenticated caller, client address and request id."""
    return Origin(
        principal=getattr(request.state, "principal", None),
        ip=request.client.host if request.client else None,
        request_id=getattr(request.state, "request_id", None),
    )


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, type="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="chronos"'})


async def authenticate(request: Request) -> Principal:
    """Resolve the caller from ``Authorization: Bearer`` or ``X-API-Key``; 401 otherwise."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    runtime = request.app.state.runtime
    ctx = runtime.ctx
    secret = None
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized("Authorization header must be 'Bearer <key>'")
        secret = value.strip()
    elif ctx.settings.kernel.auth.accept_x_api_key and request.headers.get("x-api-key"):
        secret = request.headers["x-api-key"].strip()
    if not secret:
        signed = await _signed_caller(request, ctx)
        if signed is not None:
            return signed
        raise _unauthorized("An API key is required (Authorization: Bearer <key> or X-API-Key)")
    principal: Principal | None = await runtime.keys.verify(secret)
    if principal is None:
        raise _unauthorized("The API key is unknown, revoked or expired")
    request.state.principal = principal
    return principal


SIGNATURE_HEADERS = ("webhook-signature", "x-signature")


async def _signed_caller(request: Request, ctx: PluginContext) -> Principal | None:
    """A caller that signs the request with a shared secret instead of sending a key (``SignedRequests``).

    A webhook id is accepted once: the first request reserves it and the
    request middleware stores its answer; a replay gets that answer again.
    """
    if not any(h in request.headers for h in SIGNATURE_HEADERS) or not ctx.has_service(SignedRequests):
        return None
    verifier = ctx.service(SignedRequests)
    body = await request.body()
    try:
        call = await verifier.authenticate(request.headers, body)
    except NotAuthenticated as exc:
        raise _unauthorized(f"The request signature was refused: {exc.detail}") from None
    if call.webhook_id is not None:
        first = await verifier.claim(call)
        if first is not None:
            raise ReplayedAnswer(first.status_code, first.body, first.media_type)
        request.state.signed_receipt = (verifier, call)
    request.state.principal = call.principal
    return call.principal


class RequireScope:
    """FastAPI dependency: authenticate and demand ``scope`` (``admin`` implies all).

    ``or_system`` names a path parameter: a key bound to that command system may
    pass without the scope (used by the command queue's poll route).
    ``or_any_system`` lets any key bound to at least one command system pass;
    the route must then check the binding against the resource itself (the
    queue's callbacks address a command by id, not by system).
    """

    def __init__(self, scope: str, *, or_system: str | None = None, or_any_system: bool = False) -> None:
        self.scope = scope
        self.or_system = or_system
        self.or_any_system = or_any_system

    async def __call__(self, request: Request) -> Principal:
        principal = await authenticate(request)
        if principal.has(self.scope):
            return Principal(principal.key_id, principal.name, principal.scopes, principal.systems, self.scope)
        if self.or_system:
            system = request.path_params.get(self.or_system)
            if system is not None and principal.bound_to(system):
                return Principal(principal.key_id, principal.name, principal.scopes, principal.systems, self.scope)
        if self.or_any_system and principal.systems:
            return Principal(principal.key_id, principal.name, principal.scopes, principal.systems, self.scope)
        raise Problem(403, f"This key lacks the scope {self.scope!r}", type="forbidden", required_scope=self.scope)


def require_scope(scope: str, *, or_system: str | None = None, or_any_system: bool = False) -> RequireScope:
    """Dependency factory: ``Depends(require_scope("events.read"))``."""
    return RequireScope(scope, or_system=or_system, or_any_system=or_any_system)


class Public:
    """Marks a route as intentionally unauthenticated (health, feeds with tokens)."""

    scope = None

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def __call__(self) -> None:
        return None


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
