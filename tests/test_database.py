"""The database layer: SQLite pragmas and the single writer path; sessions on both backends."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text

from chronos.db.base import utcnow
from chronos.db.engine import Database
from chronos.db.migrate import migrate
from chronos.db.models import JobRun


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
                got = {
                    p: (await s.execute(text(f"PRAGMA {p}"))).scalar()
                    for p in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
                }
            assert got == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 15_000, "synchronous": 1}, got
        async with db.read() as s:
            assert (await s.execute(text("PRAGMA cache_size"))).scalar() == -2000  # SQLite's default
        async with db.write() as s:  # the writing connection's cache: database.sqlite_write_cache_mib
            assert (await s.execute(text("PRAGMA cache_size"))).scalar() == -64 * 1024
            # database.sqlite_checkpoint_mib, in pages of 4 KiB, and the log trimmed back to it
            assert (await s.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 64 * 256
            assert (await s.execute(text("PRAGMA journal_size_limit"))).scalar() == 64 * 1024 * 1024
    finally:
        await db.dispose()
    other = Database(database.url, write_cache_mib=8, checkpoint_mib=2)
    try:
        async with other.write() as s:
            assert (await s.execute(text("PRAGMA cache_size"))).scalar() == -8 * 1024
            assert (await s.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 2 * 256
    finally:
        await other.dispose()


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


SLOW_QUERY = text(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT count(*) FROM n"
)


@pytest.mark.backends("sqlite")
async def test_a_writer_cancelled_mid_statement_does_not_keep_the_write_lock(database):
    """A write cancelled while a statement runs (a client that went away, a
    shutdown) must end its transaction, even while the cancelled task, and so
    the statement's cursor, is still referenced: another handle on the file
    (another process, in effect) can write at once."""
    db = await migrated(database)
    other = Database(database.url, busy_timeout_ms=2_000)
    kept: list[asyncio.Task[None]] = []  # like a job runner keeping its tasks

    async def writer() -> None:
        async with db.write() as s:
            s.add(JobRun(job="cancelled", trigger="manual", status="running", started_at=utcnow()))
            await s.flush()
            await s.execute(SLOW_QUERY)

    try:
        for _ in range(3):
            task = asyncio.create_task(writer())
            kept.append(task)
            await asyncio.sleep(0.05)  # inside the slow statement
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            async with other.write() as s:
                s.add(JobRun(job="probe", trigger="manual", status="ok", started_at=utcnow()))
        async with db.read() as s:
            jobs = sorted(j for (j,) in await s.execute(select(JobRun.job)))
        assert jobs == ["probe"] * 3  # the cancelled transactions left nothing behind
    finally:
        await db.dispose()
        await other.dispose()


async def test_cancelled_writers_leave_no_transaction_behind(database):
    """A writer cancelled anywhere (mid-statement, mid-commit, level-triggered by
    anyio like a request whose client went away) ends its transaction: another
    handle on the same database can still write at once, and each transaction
    is all or nothing."""
    import anyio

    db = await migrated(database)
    other = Database(database.url, schema=database.schema, busy_timeout_ms=3_000)

    async def writer(tag: str) -> None:
        async with db.write() as s:
            for i in range(5):
                s.add(JobRun(job=f"{tag}-{i}", trigger="manual", status="ok", started_at=utcnow()))
                await s.flush()

    try:
        for round_ in range(40):
            delay = (round_ % 10) * 0.0007
            if round_ % 2:
                with anyio.move_on_after(delay):
                    await writer(f"scope{round_}")
            else:
                task = asyncio.create_task(writer(f"task{round_}"))
                await asyncio.sleep(delay)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            # Another handle (another process, in effect) is not locked out.
            async with other.write() as s:
                s.add(JobRun(job=f"probe{round_}", trigger="manual", status="ok", started_at=utcnow()))
        async with db.read() as s:
            jobs = [j for (j,) in await s.execute(select(JobRun.job))]
        probes = [j for j in jobs if j.startswith("probe")]
        assert len(probes) == 40
        per_writer: dict[str, int] = {}
        for j in jobs:
            if not j.startswith("probe"):
                per_writer[j.rsplit("-", 1)[0]] = per_writer.get(j.rsplit("-", 1)[0], 0) + 1
        assert set(per_writer.values()) <= {5}, per_writer  # never a partial transaction
    finally:
        await db.dispose()
        await other.dispose()


@pytest.mark.backends("sqlite")
async def test_processes_opening_a_new_database_together_all_get_in(tmp_path):
    """Switching a new file to WAL needs it to itself, and when two connections try at
    once SQLite answers "locked" to one of them without waiting: several processes
    starting on a new database together (replicas, a worker and the API) must all
    get in. Each round opens four handles (four connection threads) on a new file."""
    for round_ in range(60):
        url = f"sqlite+aiosqlite:///{tmp_path / f'new-{round_}.db'}"
        dbs = [Database(url) for _ in range(4)]
        try:
            await asyncio.gather(*(db.ping() for db in dbs))
        finally:
            for db in dbs:
                await db.dispose()
        async with dbs[0].read() as s:
            assert (await s.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        await dbs[0].dispose()


async def test_a_postgresql_server_that_never_answers_fails_after_the_connect_timeout():
    """A host that accepts connections and then says nothing (a hung proxy, a half-dead server):
    opening a session fails after database.connect_timeout_seconds, as 'unreachable' (a 503 over
    HTTP), instead of holding the request for asyncpg's default minute."""
    import socket

    from chronos.db.engine import storage_failure

    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
    port = mute.getsockname()[1]
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test", connect_timeout_seconds=0.5)

    async def query() -> None:
        async with db.read() as s:
            await s.execute(text("SELECT 1"))

    try:
        task = asyncio.create_task(query())
        done, _ = await asyncio.wait({task}, timeout=30)  # a bound for a broken build, not a speed check
        if not done:
            task.cancel()
            pytest.fail("the connect timeout was not applied: still waiting for the mute server after 30 s")
        error = task.exception()
        assert error is not None and storage_failure(error) == "unreachable", error
    finally:
        await db.dispose()
        mute.close()
