"""Database connections under more concurrent requests than connections: waiting checkouts are
served in arrival order (a request arriving while others wait cannot take a returned connection
first), and on SQLite each statement is one trip to the connection's thread."""

from __future__ import annotations

import asyncio

import aiosqlite
import pytest
from sqlalchemy import exc as sa_exc, text
from sqlalchemy.ext.asyncio import create_async_engine

from chronos.db.engine import make_engine
from chronos.db.pool import FairAsyncQueuePool
from kernel_support import wait_until


async def test_engines_use_the_fair_pool(database):
    for role in ("read", "write"):
        engine = make_engine(database.url, role=role, schema=database.schema)
        try:
            assert isinstance(engine.pool, FairAsyncQueuePool), (role, type(engine.pool))
        finally:
            await engine.dispose()


async def test_waiting_checkouts_are_served_in_arrival_order(database):
    engine = create_async_engine(database.url, poolclass=FairAsyncQueuePool, pool_size=1, max_overflow=0)
    queue = engine.pool._pool
    order: list[str] = []

    async def waiter(name: str) -> None:
        async with engine.connect() as conn:
            order.append(name)
            await conn.execute(text("SELECT 1"))

    try:
        holder = await engine.connect()
        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(waiter(f"w{i}")))
            await wait_until(lambda n=i + 1: len(queue._waiters) == n, what=f"waiter {i} queued")
        # The connection comes back and, before any waiter runs, a new request asks for one:
        # it must queue behind the five instead of taking the returned connection.
        await holder.close()
        await waiter("late")
        await asyncio.gather(*tasks)
        assert order == ["w0", "w1", "w2", "w3", "w4", "late"]
    finally:
        await engine.dispose()


async def test_a_cancelled_waiter_loses_no_connection(database):
    engine = create_async_engine(
        database.url, poolclass=FairAsyncQueuePool, pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    try:
        holder = await engine.connect()

        async def checkout():
            return await engine.connect()

        task = asyncio.create_task(checkout())
        await wait_until(lambda: len(engine.pool._pool._waiters) == 1, what="waiter queued")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(sa_exc.TimeoutError):  # the pool is still exhausted: waits time out
            await engine.connect()
        await holder.close()
        async with engine.connect() as conn:  # the one connection is still there to take
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_sqlite_statements_take_one_trip_each(tmp_path, monkeypatch):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}", role="write")
    trips = 0
    real = aiosqlite.Connection._execute

    async def counting(self, fn, *args, **kwargs):
        nonlocal trips
        trips += 1
        return await real(self, fn, *args, **kwargs)

    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
        async with engine.begin() as conn:
            trips = 0
            result = await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
            assert trips == 1 and result.lastrowid == 1 and result.rowcount == 1
            await conn.execute(text("INSERT INTO t (name) VALUES (:n)"), [{"n": "b"}, {"n": "c"}, {"n": "d"}])
            trips = 0
            rows = (await conn.execute(text("SELECT id, name FROM t ORDER BY id"))).all()
            assert trips == 1
            assert [tuple(r) for r in rows] == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
            result = await conn.execute(text("UPDATE t SET name = name || '!' WHERE id > 2"))
            assert result.rowcount == 2
            returned = await conn.execute(text("INSERT INTO t (name) VALUES ('e') RETURNING id, name"))
            assert [tuple(r) for r in returned] == [(5, "e")]
            with pytest.raises(sa_exc.IntegrityError):
                await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        trips = 0
        async with engine.connect() as conn:
            names = (await conn.execute(text("SELECT name FROM t ORDER BY id"))).scalars().all()
            await conn.rollback()
        assert names == ["a", "b", "c!", "d!", "e"]
        # BEGIN IMMEDIATE, the SELECT, the rollback; the pool's reset of the returned connection
        # finds no transaction open and makes no trip.
        assert trips == 3
    finally:
        await engine.dispose()
