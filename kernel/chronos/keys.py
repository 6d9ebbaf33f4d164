"""API keys: secrets, verification and management (shared by the CLI and the HTTP API).

A key's secret is ``chr_<id>_<random>``; only the SHA-256 of the random part is
stored (the secret has 192 bits of entropy, so a slow hash adds nothing), and
only the id and the prefix are ever shown again. ``CHRONOS_ADMIN_KEY`` defines
a bootstrap key with every scope that lives only in the environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.context import PluginContext
from chronos.db.models import ApiKey
from chronos.exceptions import Conflict, InvalidInput
from chronos.identity import Principal

log = structlog.get_logger("chronos.keys")

BOOTSTRAP_ID = "bootstrap"
SECRET_PREFIX = "chr_"


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
    rest = secret[len(SECRET_PREFIX) :]
    key_id, sep, token = rest[:14], rest[14:15], rest[15:]
    if sep != "_" or not token or len(secret) > 200:
        return None
    return key_id


class KeyVerifier:
    """Checks secrets against the stored keys, with a short per-process cache.

    A key in use is read again before its cache entry runs out, in the background and once
    however many requests use it, so busy clients never all miss the cache together (at the
    end of every ``auth.key_cache_seconds``, 200 clients of one key each read it: a burst of
    queries in front of the pool that made a few requests of every second wait seconds).
    Concurrent misses of one key share one read.
    """

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self._verified: dict[str, tuple[str, Principal, datetime | None, float]] = {}
        self._touched: dict[str, float] = {}
        self._reading: dict[str, asyncio.Future[Any]] = {}
        self._generation: dict[str, int] = {}
        self._refreshes: set[asyncio.Future[None]] = set()

    async def aclose(self) -> None:
        """Stop the background refreshes (before the database goes away)."""
        pending = list(self._refreshes)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def forget(self, key_id: str) -> None:
        """Drop a key from this process's cache (after revoking it)."""
        self._verified.pop(key_id, None)
        # A read in flight started before the revocation: its row must not be cached.
        self._generation[key_id] = self._generation.get(key_id, 0) + 1

    async def verify(self, secret: str) -> Principal | None:
        """The principal a secret stands for; None for unknown, revoked or expired keys."""
        ctx = self.ctx
        bootstrap = os.environ.get("CHRONOS_ADMIN_KEY")
        digest = hash_secret(secret)
        if bootstrap and len(bootstrap) >= 16 and hmac.compare_digest(digest, hash_secret(bootstrap)):
            return Principal(BOOTSTRAP_ID, "bootstrap (CHRONOS_ADMIN_KEY)", frozenset(ctx.scopes))
        key_id = parse_secret(secret)
        if key_id is None:
            return None
        now = datetime.now(UTC)
        # Verified keys are remembered briefly (auth.key_cache_seconds) so a busy
        # client does not cost a database read per request. Revoking through this
        # process drops the entry at once; other processes notice within the TTL.
        ttl = ctx.settings.kernel.auth.key_cache_seconds
        verified = self._verified
        hit = verified.get(key_id)
        if hit is not None and ttl > 0:
            cached_digest, principal, expires_at, cached_at = hit
            age = time.monotonic() - cached_at
            if age < ttl and hmac.compare_digest(cached_digest, digest) and (expires_at is None or expires_at > now):
                if age > ttl / 2 and key_id not in self._reading:
                    self._refresh(key_id)
                return principal
            verified.pop(key_id, None)
        generation = self._generation.get(key_id, 0)
        row = await self._read(key_id)
        if row is None or not hmac.compare_digest(row.secret_hash, digest):
            return None
        return await self._accept(key_id, row, now, generation)

    async def _accept(self, key_id: str, row: Any, now: datetime, generation: int) -> Principal | None:
        """The principal of a stored key whose hash matched, cached; None when revoked or expired."""
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            self._verified.pop(key_id, None)
            return None
        touched = self._touched
        last = touched.get(key_id)
        if last is None or (now.timestamp() - last) > 60:
            # last_used_at is advisory; touching it at most once a minute keeps reads cheap.
            touched[key_id] = now.timestamp()
            try:
                # Never wait behind a long write (a sync's batch on SQLite): a later request touches it.
                async with asyncio.timeout(0.25), self.ctx.db.write() as s:
                    await s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
            except TimeoutError:
                touched.pop(key_id, None)
        principal = Principal(row.id, row.name, frozenset(row.scopes), frozenset(row.systems or []))
        if self.ctx.settings.kernel.auth.key_cache_seconds > 0 and self._generation.get(key_id, 0) == generation:
            self._verified[key_id] = (row.secret_hash, principal, row.expires_at, time.monotonic())
        return principal

    async def _read(self, key_id: str) -> Any:
        """The stored key (None if unknown); concurrent callers for one key share one query."""
        return await asyncio.shield(self._reading_of(key_id))

    def _reading_of(self, key_id: str) -> asyncio.Future[Any]:
        pending = self._reading.get(key_id)
        if pending is None:
            pending = asyncio.ensure_future(self._query(key_id))
            self._reading[key_id] = pending

            def done(future: asyncio.Future[Any], key_id: str = key_id) -> None:
                if self._reading.get(key_id) is future:
                    del self._reading[key_id]

            pending.add_done_callback(done)
        return pending

    async def _query(self, key_id: str) -> Any:
        async with self.ctx.db.read() as s:
            return (await s.execute(select(ApiKey).where(ApiKey.id == key_id))).scalar_one_or_none()

    def _refresh(self, key_id: str) -> None:
        """Read a cached key again before its entry runs out (in the background)."""
        generation = self._generation.get(key_id, 0)
        pending = self._reading_of(key_id)

        async def refresh() -> None:
            try:
                row = await pending
                if row is None:
                    self._verified.pop(key_id, None)
                else:
                    await self._accept(key_id, row, datetime.now(UTC), generation)
            except Exception as exc:  # noqa: BLE001 - the next request past the TTL reads it itself
                log.warning("api_key_refresh_failed", key_id=key_id, error=f"{type(exc).__name__}: {exc}")

        task = asyncio.ensure_future(refresh())
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)


async def active_key_ids(session: AsyncSession, key_ids: Iterable[str]) -> set[str]:
    """The ids among ``key_ids`` of keys that still open the API: neither revoked
    nor expired (the bootstrap key while ``CHRONOS_ADMIN_KEY`` is set).

    For credentials a plugin derives from a key (feed tokens, share links): they
    must die with the key that created them.
    """
    wanted = set(key_ids)
    out: set[str] = set()
    if BOOTSTRAP_ID in wanted:
        bootstrap = os.environ.get("CHRONOS_ADMIN_KEY")
        if bootstrap and len(bootstrap) >= 16:
            out.add(BOOTSTRAP_ID)
        wanted.discard(BOOTSTRAP_ID)
    if wanted:
        now = datetime.now(UTC)
        rows = await session.execute(
            select(ApiKey.id, ApiKey.revoked_at, ApiKey.expires_at).where(ApiKey.id.in_(sorted(wanted)))
        )
        out |= {r.id for r in rows if r.revoked_at is None and (r.expires_at is None or r.expires_at > now)}
    return out


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


SYSTEM_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def key_view(row: ApiKey) -> dict[str, Any]:
    now = datetime.now(UTC)
    status = "active"
    if row.revoked_at is not None:
        status = "revoked"
    elif row.expires_at is not None and row.expires_at <= now:
        status = "expired"
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes),
        "systems": list(row.systems or []),
        "status": status,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "last_used_at": row.last_used_at,
    }


def check_scopes(scopes: list[str], known: Mapping[str, str]) -> list[str]:
    unknown = [s for s in scopes if s not in known]
    if unknown:
        raise InvalidInput(
            f"Unknown scope(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            errors=[{"pointer": "/scopes", "detail": f"unknown scope {u!r}"} for u in unknown],
        )
    if not scopes:
        raise InvalidInput("A key needs at least one scope", errors=[{"pointer": "/scopes", "detail": "empty"}])
    return sorted(set(scopes))


async def create_key(
    session: AsyncSession,
    *,
    name: str,
    scopes: list[str],
    known_scopes: Mapping[str, str],
    systems: list[str] | None = None,
    expires_in: timedelta | None = None,
    max_lifetime_days: int | None = None,
    created_by: str | None = None,
) -> tuple[ApiKey, str]:
    scopes = check_scopes(scopes, known_scopes)
    if max_lifetime_days is not None:
        limit = timedelta(days=max_lifetime_days)
        if expires_in is None or expires_in > limit:
            raise InvalidInput(
                f"Keys must expire within {max_lifetime_days} days (auth.max_key_lifetime_days)",
                errors=[{"pointer": "/expires_in_seconds", "detail": "too long or missing"}],
            )
    key_id, secret, digest = new_secret()
    now = datetime.now(UTC)
    row = ApiKey(
        id=key_id,
        name=name,
        prefix=display_prefix(secret),
        secret_hash=digest,
        scopes=scopes,
        systems=sorted(set(systems or [])),
        created_at=now,
        expires_at=(now + expires_in) if expires_in else None,
        created_by=created_by,
    )
    session.add(row)
    await session.flush()
    return row, secret


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list((await session.execute(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))).scalars())


async def revoke_key(
    session: AsyncSession, key_id: str, *, requester: str | None = None, force: bool = False
) -> ApiKey | None:
    """Revoke ``key_id``; None when there is no such key.

    Refused (:class:`Conflict`) for the bootstrap key, which lives in the
    environment, and, unless ``force``, for ``requester``: the key making the
    request, whose client would lock itself out.
    """
    if key_id == BOOTSTRAP_ID:
        raise Conflict(
            "The bootstrap key comes from CHRONOS_ADMIN_KEY and cannot be revoked;"
            " remove the variable from the service's environment and restart it",
            type="key-in-use",
        )
    row = await session.get(ApiKey, key_id)
    if row is None:
        return None
    if key_id == requester and not force and row.revoked_at is None:
        raise Conflict(
            f"Key {key_id!r} is the key making this request; revoking it locks this client out."
            " Repeat with force=true to revoke it anyway",
            type="key-in-use",
        )
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return row
