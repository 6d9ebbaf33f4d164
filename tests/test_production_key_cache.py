"""API keys under many concurrent clients: concurrent cache misses of one key share one
database read, a key in use is read again in the background before its cache entry runs out
(no request waits for it), and a revocation is still noticed within ``auth.key_cache_seconds``."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import event, update

from chronos.db.base import utcnow
from chronos.db.models import ApiKey
from chronos.keys import parse_secret
from chronos.testing import client, create_test_key, runtime_of
from kernel_support import wait_until


def count_key_reads(app) -> list[str]:
    seen: list[str] = []
    engine = app.state.chronos.db.reader.sync_engine

    @event.listens_for(engine, "before_cursor_execute")
    def _record(conn, cursor, statement, *args):
        if "FROM api_keys" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    return seen


def hold_reads(keys) -> asyncio.Event:
    """Make the key store's reads wait until the returned event is set."""
    gate = asyncio.Event()
    query = keys._query

    async def held(kid):
        await gate.wait()
        return await query(kid)

    keys._query = held
    return gate


async def test_concurrent_misses_of_one_key_share_one_read(chronos_app):
    async with chronos_app(config={"auth": {"key_cache_seconds": 60}}) as app:
        secret = await create_test_key(app, ["health.read"])
        reads = count_key_reads(app)
        keys = runtime_of(app).keys
        results = await asyncio.gather(*(keys.verify(secret) for _ in range(50)))
        assert all(p is not None and p.key_id == parse_secret(secret) for p in results)
        assert len(reads) == 1, reads
        async with client(app, secret) as c:  # and through HTTP, from the cache
            assert (await c.get("/health")).status_code == 200
        assert len(reads) == 1


async def test_a_key_in_use_is_read_again_before_its_entry_runs_out(chronos_app):
    async with chronos_app(config={"auth": {"key_cache_seconds": 1.0}}) as app:
        secret = await create_test_key(app, ["health.read"])
        key_id = parse_secret(secret)
        keys = runtime_of(app).keys
        assert await keys.verify(secret) is not None
        digest, principal, expires_at, cached_at = keys._verified[key_id]

        # The next read waits until released: a request must not wait for it.
        gate = hold_reads(keys)
        keys._verified[key_id] = (digest, principal, expires_at, time.monotonic() - 0.7)  # past half the TTL
        got = await asyncio.wait_for(keys.verify(secret), 5)
        assert got is not None and got.key_id == key_id
        assert key_id in keys._reading  # the refresh is under way in the background
        gate.set()
        await wait_until(lambda: key_id not in keys._reading and not keys._refreshes, what="the refresh")
        assert time.monotonic() - keys._verified[key_id][3] < 0.5  # the entry is fresh again

        # Revoked by another process: the next refresh drops the entry and the key is refused.
        async with app.state.chronos.db.write() as s:
            await s.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=utcnow()))
        entry = keys._verified[key_id]
        keys._verified[key_id] = (*entry[:3], time.monotonic() - 0.7)
        assert await keys.verify(secret) is not None  # still within the TTL: accepted, as documented
        await wait_until(lambda: key_id not in keys._reading and not keys._refreshes, what="the refresh")
        assert key_id not in keys._verified
        assert await keys.verify(secret) is None


async def test_a_refresh_in_flight_does_not_undo_forget(chronos_app):
    async with chronos_app(config={"auth": {"key_cache_seconds": 1.0}}) as app:
        secret = await create_test_key(app, ["health.read"])
        key_id = parse_secret(secret)
        keys = runtime_of(app).keys
        assert await keys.verify(secret) is not None
        gate = hold_reads(keys)
        entry = keys._verified[key_id]
        keys._verified[key_id] = (*entry[:3], time.monotonic() - 0.7)
        assert await keys.verify(secret) is not None
        assert key_id in keys._reading
        keys.forget(key_id)  # revoked through this process while the refresh reads the old row
        gate.set()
        await wait_until(lambda: key_id not in keys._reading and not keys._refreshes, what="the refresh")
        assert key_id not in keys._verified


async def test_a_refresh_in_flight_stops_quietly_at_shutdown(chronos_app):
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        async with chronos_app(config={"auth": {"key_cache_seconds": 1.0}}) as app:
            secret = await create_test_key(app, ["health.read"])
            key_id = parse_secret(secret)
            keys = runtime_of(app).keys
            assert await keys.verify(secret) is not None
            hold_reads(keys)  # never released: the refresh is still reading when the service stops
            entry = keys._verified[key_id]
            keys._verified[key_id] = (*entry[:3], time.monotonic() - 0.7)
            assert await keys.verify(secret) is not None
            refreshes = set(keys._refreshes)
            assert refreshes
        assert all(task.done() for task in refreshes)
    assert not [e for e in logs if e["event"] == "api_key_refresh_failed"], logs
