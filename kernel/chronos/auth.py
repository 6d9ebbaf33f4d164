"""API keys and scopes.

A key's secret is ``chr_<id>_<random>``; only the SHA-256 of the random part is
stored (the secret has 192 bits of entropy, so a slow hash adds nothing), and
only the id and the prefix are ever shown again. ``CHRONOS_ADMIN_KEY`` defines
a bootstrap key with every scope that lives only in the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request
from fastapi.security import APIKeyHeader, HTTPBearer
from sqlalchemy import select, update

from chronos.errors import Problem

BOOTSTRAP_ID = "bootstrap"
SECRET_PREFIX = "chr_"

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
_x_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: key id, its scopes and bound command systems."""

    key_id: str
    name: str
    scopes: frozenset[str]
    systems: frozenset[str] = field(default_factory=frozenset)
    scope_used: str | None = None

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def bound_to(self, system: str) -> bool:
        return system in self.systems


def hash_secret(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def new_secret() -> tuple[str, str, str]:
    """(key id, full secret, stored hash)."""
    key_id = "k_" + secrets.token_hex(6)
    token = secrets.token_urlsafe(24)
    secret = f"{SECRET_PREFIX}{key_id}_{token}"
    return key_id, secret, hash_secret(secret)


def display_prefix(secret: str) -> str:
    return secret[: len(SECRET_PREFIX) + 15]


def parse_secret(secret: str) -> str | None:
    """The key id inside a well-formed secret, else None."""
    if not secret.startswith(SECRET_PREFIX + "k_"):
        return None
    rest = secret[len(SECRET_PREFIX):]
    key_id, sep, token = rest[:14], rest[14:15], rest[15:]
    if sep != "_" or not token or len(secret) > 200:
        return None
    return key_id


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, type="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="chronos"'})


async def authenticate(request: Request) -> Principal:
    """Resolve the caller from ``Authorization: Bearer`` or ``X-API-Key``; 401 otherwise."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    ctx = request.app.state.chronos
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
        raise _unauthorized("An API key is required (Authorization: Bearer <key> or X-API-Key)")
    principal = await verify_secret(ctx, secret)
    if principal is None:
        raise _unauthorized("The API key is unknown, revoked or expired")
    request.state.principal = principal
    return principal


async def verify_secret(ctx: Any, secret: str) -> Principal | None:
    bootstrap = os.environ.get("CHRONOS_ADMIN_KEY")
    digest = hash_secret(secret)
    if bootstrap and len(bootstrap) >= 16 and hmac.compare_digest(digest, hash_secret(bootstrap)):
        return Principal(BOOTSTRAP_ID, "bootstrap (CHRONOS_ADMIN_KEY)", frozenset(ctx.state["scopes"]))
    key_id = parse_secret(secret)
    if key_id is None:
        return None
    now = datetime.now(UTC)
    # Verified keys are remembered briefly (auth.key_cache_seconds) so a busy
    # client does not cost a database read per request. Revoking through this
    # process drops the entry at once; other processes notice within the TTL.
    ttl = ctx.settings.kernel.auth.key_cache_seconds
    verified: dict[str, tuple[str, Principal, datetime | None, float]] = ctx.state.setdefault("verified_keys", {})
    hit = verified.get(key_id)
    if hit is not None and ttl > 0:
        cached_digest, principal, expires_at, cached_at = hit
        fresh = time.monotonic() - cached_at < ttl
        if fresh and hmac.compare_digest(cached_digest, digest) and (expires_at is None or expires_at > now):
            return principal
        verified.pop(key_id, None)
    from chronos.db.models import ApiKey

    touched: dict[str, float] = ctx.state.setdefault("key_last_touch", {})
    async with ctx.db.read() as s:
        row = (await s.execute(select(ApiKey).where(ApiKey.id == key_id))).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.secret_hash, digest):
        return None
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    last = touched.get(key_id)
    if last is None or (now.timestamp() - last) > 60:
        # last_used_at is advisory; touching it at most once a minute keeps reads cheap.
        touched[key_id] = now.timestamp()
        async with ctx.db.write() as s:
            await s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
    principal = Principal(row.id, row.name, frozenset(row.scopes), frozenset(row.systems or []))
    if ttl > 0:
        verified[key_id] = (digest, principal, row.expires_at, time.monotonic())
    return principal


def forget_key(ctx: Any, key_id: str) -> None:
    """Drop a key from this process's verification cache (after revoking it)."""
    ctx.state.get("verified_keys", {}).pop(key_id, None)


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


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s`` or ``2w`` -> timedelta."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, e.g. 30d, 12h, 90m")
    seconds = int(text[:-1]) * units[text[-1]]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)
