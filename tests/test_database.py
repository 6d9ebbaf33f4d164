"""The database layer: SQLite pragmas and the single writer path; sessions on both backends."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text

from chronos.db.engine import Database
from chronos.db.migrate import migrate
from chronos.db.models import JobRun
from chronos.db.base import utcnow


async def migrated(database) -> Database:
    await migrate(database.url, [], schema=database.schema)
    return Database(database.url, schema=database.schema, busy_timeout_ms=15_000)


async def insert_runs(db: Database, n: int, tag: str) -> None:
    async def one(i: int) -> None:
        async with db.write() as s:
            s.add(JobRun(job=f"{tag}-{i}", trigger="manual", status="ok", started_at=utcnow()))
            await s.flush()
            # Read-modify-write inside the transaction: a lost update or a lock error would show.
            await s.execute(select(func.count()).select_from(JobRun))
            await asyncio.sleep(0)

    await asyncio.gather(*(one(i) for i in range(n)))


async def count_runs(db: Database) -> int:
    async with db.read() as s:
        return (await s.execute(select(func.count()).select_from(JobRun))).scalar_one()


async def test_fifty_concurrent_writers_never_fail(database):
    db = await migrated(database)
    try:
        await insert_runs(db, 50, "w")
        assert await count_runs(db) == 50
    finally:
        await db.dispose()


@pytest.mark.backends("sqlite")
async def test_two_databases_on_one_sqlite_file_wait_for_each_other(database):
    """Two handles on one file behave like two processes: busy_timeout queues the writers."""
    a, b = await migrated(database), Database(database.url, busy_timeout_ms=15_000)
    try:
        await asyncio.gather(insert_runs(a, 25, "a"), insert_runs(b, 25, "b"))
        assert await count_runs(a) == 50
    finally:
        await a.dispose()
        await b.dispose()


@pytest.mark.backends("sqlite")
async def test_sqlite_pragmas_are_in_effect(database):
    db = await migrated(database)
    try:
        for session_factory in (db.read, db.write):
            async with session_factory() as s:
                got = {p: (await s.execute(text(f"PRAGMA {p}"))).scalar() for p in
                       ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")}
            assert got == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 15_000, "synchronous": 1}, got
    finally:
        await db.dispose()


async def test_write_rolls_back_on_error_and_read_sees_commits(database):
    db = await migrated(database)
    try:
        with pytest.raises(RuntimeError):
            async with db.write() as s:
                s.add(JobRun(job="doomed", trigger="manual", status="ok", started_at=utcnow()))
                await s.flush()
                raise RuntimeError("abort")
        assert await count_runs(db) == 0
        async with db.write() as s:
            s.add(JobRun(job="kept", trigger="manual", status="ok", started_at=utcnow()))
        assert await count_runs(db) == 1
        await db.ping()
    finally:
        await db.dispose()


async def test_timestamps_come_back_as_utc(database):
    from datetime import UTC, datetime, timedelta, timezone

    db = await migrated(database)
    try:
        local = datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2)))
        async with db.write() as s:
            s.add(JobRun(job="tz", trigger="manual", status="ok", started_at=local))
        async with db.read() as s:
            row = (await s.execute(select(JobRun))).scalar_one()
        assert row.started_at == local and row.started_at.tzinfo == UTC
        assert row.started_at.isoformat() == "2026-03-29T01:30:00+00:00"
        with pytest.raises(Exception, match="naive datetime"):
            async with db.write() as s:
                s.add(JobRun(job="naive", trigger="manual", status="ok", started_at=datetime(2026, 1, 1)))
    finally:
        await db.dispose()
