"""SQLite statements in one trip to the connection's thread.

aiosqlite runs every call on the connection's own thread and hands the result
back to the event loop; SQLAlchemy's adapter makes four such calls per
statement (open a cursor, execute, fetch the rows, close the cursor), each a
queue put, a thread wake-up and a loop wake-up through its self-pipe. Under
concurrent requests those hand-offs cost more CPU than the statements. The
cursor here does the four steps in one call: it executes, fetches every row
(as the stock adapter does for a result), reads ``rowcount``, ``lastrowid``
and ``description`` and closes the cursor on that thread, so a statement is
one hand-off. Server-side (streamed) cursors keep the stock behaviour. A
commit or rollback with no transaction open (the pool's reset of a connection
its session already ended) makes no trip at all.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[Any, int, int | None, list[Any] | None]


def _run_statement(conn: sqlite3.Connection, operation: Any, parameters: Any, many: bool) -> _Outcome:
    """On the connection's thread: the whole statement, from cursor to closed cursor."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose every statement is one call on the connection's thread."""

    __slots__ = ("_description", "_rowcount", "_lastrowid", "_arraysize")

    # Nothing to close on the connection's thread: the statement closed its cursor there.
    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: Any) -> None:
        # No cursor is opened here (the stock adapter spends a trip to the thread on it).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows: collections.deque[Any] = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run(operation, parameters, False))
        except Exception as error:  # noqa: BLE001 - translated as the stock adapter does
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            return await_(self._run(operation, seq_of_parameters, True))
        except Exception as error:  # noqa: BLE001
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: Any, parameters: Any, many: bool) -> None:
        conn: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        async with self._adapt_connection._execute_mutex:
            outcome: _Outcome = await conn._execute(_run_statement, conn._conn, operation, parameters, many)
        self._description, self._rowcount, self._lastrowid, rows = outcome
        self._rows = collections.deque(rows) if rows else collections.deque()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """Commit and rollback outside a transaction take no trip: the pool rolls back every
    connection it gets back, most of them already committed or rolled back by their session."""

    __slots__ = ()
    _cursor_cls = OneTripCursor

    def _idle(self) -> bool:
        raw: sqlite3.Connection | None = self._connection._connection
        return raw is not None and not raw.in_transaction

    def rollback(self) -> None:
        if not self._idle():
            super().rollback()

    def commit(self) -> None:
        if not self._idle():
            super().commit()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DB-API adapter with :class:`OneTripCursor` (pass as ``module=`` to the engine)."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        stock = super().connect(*arg, **kw)
        return OneTripConnection(self, stock._connection)


def one_trip_dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
