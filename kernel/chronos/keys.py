"""API key management shared by the CLI and the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.auth import display_prefix, new_secret
from chronos.db.models import ApiKey
from chronos.errors import Problem

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


def check_scopes(scopes: list[str], known: dict[str, str]) -> list[str]:
    unknown = [s for s in scopes if s not in known]
    if unknown:
        raise Problem(
            422,
            f"Unknown scope(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            type="validation",
            errors=[{"pointer": "/scopes", "detail": f"unknown scope {u!r}"} for u in unknown],
        )
    if not scopes:
        raise Problem(422, "A key needs at least one scope", type="validation", errors=[{"pointer": "/scopes", "detail": "empty"}])
    return sorted(set(scopes))


async def create_key(
    session: AsyncSession,
    *,
    name: str,
    scopes: list[str],
    known_scopes: dict[str, str],
    systems: list[str] | None = None,
    expires_in: timedelta | None = None,
    max_lifetime_days: int | None = None,
    created_by: str | None = None,
) -> tuple[ApiKey, str]:
    scopes = check_scopes(scopes, known_scopes)
    if max_lifetime_days is not None:
        limit = timedelta(days=max_lifetime_days)
        if expires_in is None or expires_in > limit:
            raise Problem(422, f"Keys must expire within {max_lifetime_days} days (auth.max_key_lifetime_days)", type="validation",
                          errors=[{"pointer": "/expires_in_seconds", "detail": "too long or missing"}])
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


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    row = await session.get(ApiKey, key_id)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return row
