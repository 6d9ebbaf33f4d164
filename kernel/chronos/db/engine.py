"""Engines and sessions.

On SQLite every write in this process goes through one connection guarded by an
asyncio lock and opened with ``BEGIN IMMEDIATE``: our own writers queue instead
of failing with "database is locked", and writers in other processes wait on
``busy_timeout``. Readers use their own pool and see WAL snapshots. On
PostgreSQL reads and writes share one pool, whose connections are pinged when
checked out: after a database restart the stale ones are replaced instead of
failing the next requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event, exc as sa_exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from chronos.db.pool import FairAsyncQueuePool
from chronos.db.sqlite_driver import one_trip_dbapi


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _ensure_sqlite_dir(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


class _SQLiteConnection(sqlite3.Connection):
    """Puts the file in WAL mode on open and rolls back before closing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._use_wal()

    def _use_wal(self) -> None:
        """Switch the file to WAL (a no-op once it is). The switch needs the file to
        itself and SQLite answers "locked" at once instead of waiting, which several
        processes opening a new database together run into: retry here, on the
        connection's own thread, for as long as a busy writer would wait."""
        if str(self.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        deadline = time.monotonic() + 30
        while True:
            try:
                self.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        """SQLite defers closing a connection whose statements are still referenced
        (a cursor kept alive by the traceback of a cancelled task, say) and keeps its
        transaction, and with it the database's write lock, until then. A write
        cancelled mid-statement ends with SQLAlchemy closing the connection without a
        rollback, so without this every later writer would see "database is locked"."""
        if self.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.execute("ROLLBACK")
        super().close()


def make_engine(
    url: str,
    *,
    role: str = "read",
    schema: str | None = None,
    pool_size: int = 5,
    busy_timeout_ms: int = 10_000,
    connect_timeout_seconds: float = 10.0,
    echo: bool = False,
    write_cache_mib: int = 64,
    checkpoint_mib: int = 64,
) -> AsyncEngine:
    """Create an engine for ``role`` in ``read``, ``write`` or ``migrate``.

    ``write`` and ``migrate`` on SQLite open transactions with ``BEGIN
    IMMEDIATE``; ``migrate`` also turns foreign keys off so batch table rebuilds
    cannot cascade-delete child rows (checked with ``foreign_key_check``).
    """
    kwargs: dict[str, Any] = {"echo": echo}
    if is_sqlite(url):
        _ensure_sqlite_dir(url)
        # Waiting checkouts are served in arrival order (chronos.db.pool).
        memory = ":memory:" in url or "mode=memory" in url  # one shared connection (SQLAlchemy's default)
        kwargs["poolclass"] = NullPool if role == "migrate" else None if memory else FairAsyncQueuePool
        if role == "write":
            kwargs.update(pool_size=1, max_overflow=0)
        elif role == "read":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        # One trip to the connection's thread per statement (chronos.db.sqlite_driver).
        kwargs["module"] = one_trip_dbapi()
        engine = create_async_engine(url, connect_args={"factory": _SQLiteConnection}, **kwargs)
        foreign_keys = "OFF" if role == "migrate" else "ON"
        # The one writing connection keeps the upper B-tree pages of a large file in memory (a
        # sync's random index inserts missed SQLite's 2 MiB default); readers keep the default.
        cache = [f"cache_size=-{write_cache_mib * 1024}"] if role == "write" else []
        begin = "BEGIN IMMEDIATE" if role in ("write", "migrate") else "BEGIN"

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # sqlite3 must not issue its own BEGIN: we emit ours in "begin".
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            log = []
            if role == "write":  # the writer checkpoints (readers never fill the log)
                cur.execute("PRAGMA page_size")
                page = int(cur.fetchone()[0])
                size = checkpoint_mib * 1024 * 1024
                log = [f"wal_autocheckpoint={max(1, size // page)}", f"journal_size_limit={size}"]
            for pragma in (  # journal_mode=WAL: set by _SQLiteConnection
                f"foreign_keys={foreign_keys}",
                f"busy_timeout={busy_timeout_ms}",
                "synchronous=NORMAL",
                *cache,
                *log,
            ):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        return engine

    # asyncpg waits 60 s for a server that accepts the connection and never answers (a host
    # dropping packets, a hung proxy): every request would hang as long.
    connect_args: dict[str, Any] = {"timeout": connect_timeout_seconds}
    if schema:
        connect_args["server_settings"] = {"search_path": schema}
    if role == "migrate":
        return create_async_engine(url, poolclass=NullPool, connect_args=connect_args, echo=echo)
    return create_async_engine(
        url,
        poolclass=FairAsyncQueuePool,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args=connect_args,
        echo=echo,
    )


#: SQLSTATE classes of PostgreSQL meaning "not reachable now": connection exceptions (08), the server
#: shutting down or starting up (57P01-57P03), too many connections (53300).
_UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
_SQLITE_FULL = 13


def storage_failure(error: BaseException) -> Literal["full", "unreachable"] | None:
    """Whether ``error`` (or an error it wraps) says the database's disk is full or the database
    cannot be reached (refused, dropped, timed-out or shutting-down connections); None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        sqlstate = str(getattr(current, "sqlstate", "") or "")
        if sqlstate == "53100" or getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL:
            return "full"
        if sqlstate.startswith(_UNREACHABLE_SQLSTATES):
            return "unreachable"
        if isinstance(current, ConnectionError | TimeoutError) or (
            isinstance(current, OSError) and "connect call failed" in str(current).lower()
        ):
            return "unreachable"
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return "unreachable"
        if type(current).__name__ == "InterfaceError" and "connection is closed" in str(current):
            return "unreachable"  # asyncpg, on a connection the server dropped
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return None


class Database:
    """The process's database handle: ``read()`` and ``write()`` sessions."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 5,
        busy_timeout_ms: int = 10_000,
        connect_timeout_seconds: float = 10.0,
        echo: bool = False,
        write_cache_mib: int = 64,
        checkpoint_mib: int = 64,
    ) -> None:
        self.url = url
        self.schema = schema
        self.dialect = "sqlite" if is_sqlite(url) else "postgresql"
        self.busy_timeout_ms = busy_timeout_ms

        def engine(role: str) -> AsyncEngine:
            return make_engine(
                url,
                role=role,
                schema=schema,
                pool_size=pool_size,
                busy_timeout_ms=busy_timeout_ms,
                connect_timeout_seconds=connect_timeout_seconds,
                echo=echo,
                write_cache_mib=write_cache_mib,
                checkpoint_mib=checkpoint_mib,
            )

        self.reader = engine("read")
        self.writer = engine("write") if self.is_sqlite else self.reader
        self._read_sessions = async_sessionmaker(self.reader, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self.writer, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for queries; nothing it changes is committed."""
        async with self._read_sessions() as session:
            # Closing (not rolling back) releases the connection without
            # expiring the objects already loaded.
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed on success, rolled back on error."""
        if self._write_lock is None:
            async with self._write_sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock, self._write_sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self, timeout: float = 10.0) -> None:
        """Close every connection, after the write in progress (if any) ends."""
        if self._write_lock is not None:
            try:
                await asyncio.wait_for(self._write_lock.acquire(), timeout)
            except TimeoutError:
                pass
            else:
                self._write_lock.release()
        await self.reader.dispose()
        if self.writer is not self.reader:
            await self.writer.dispose()
