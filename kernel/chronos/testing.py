"""A pytest plugin for Chronos and its plugins (entry point ``pytest11``).

Fixtures:

* ``db_backend`` / ``database`` -- parametrised over SQLite and PostgreSQL
  (``CHRONOS_TEST_BACKENDS=sqlite,postgresql``; PostgreSQL at
  ``CHRONOS_TEST_PG_URL``, default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``).
  Each test gets its own SQLite file or PostgreSQL schema. An unreachable
  PostgreSQL fails the test; it is never skipped.
* ``chronos_app`` -- ``async with chronos_app(plugins=[...], config={...}) as app``
  builds the app on the test database and runs its lifespan.
* ``api_client`` -- ``await api_client(app, scopes=[...], systems=[...])`` returns
  an ``httpx.AsyncClient`` authenticated with a fresh key holding those scopes.

A source for tests:

* :class:`FakeSource` -- a :class:`chronos.plugin.Source` (name ``"fake"``) kept
  in memory. ``FakeSource(calendars=("cal",), *, writable=False, mode="full",
  page=100, interval_seconds=3600)``; a calendar is an id, an ``(id, read_only)``
  pair or a :class:`~chronos.plugin.CalendarSpec` (read-only unless
  ``writable``). Entries: ``put(uid, title, *, calendar=None, start=None,
  **fields)`` (any ``EventDraft`` field; the default start is 2026-03-02 09:00
  UTC, the end an hour later), ``add(*drafts, calendar=None)``,
  ``replace(*drafts, calendar=None)`` (the whole listing), ``remove(uid,
  recurrence_id="", calendar=None)``, ``entries(calendar=None)``; ``errors[cal]``
  holds ``(uid, message)`` pairs of unreadable entries. ``mode="full"``: every
  fetch is a full listing in pages of ``page`` with a ``{"version": n}``
  cursor; n grows at the first fetch after a change and an unchanged version
  answers ``not_modified``. ``mode="log"``: the changes since the ``{"pos":
  n}`` cursor, ``page`` per batch, upserts and deletions (like a sync token).
  Write-back: ``can_delete`` is True for a calendar that is not read-only when
  ``writable``; ``delete_entry`` records ``(uid, recurrence_id)`` in
  ``deleted`` and removes the entry, or raises ``SourceError`` when
  ``fail_deletes`` is set. Scripting: ``fail_at = i`` raises ``SourceError``
  before batch ``i``; ``gate`` (an ``asyncio.Event``) is awaited before every
  batch; ``fetched`` lists the cursors each fetch received. Subclass it to set
  another ``name``.
* :func:`fake_source_plugin` -- ``fake_source_plugin(*sources,
  name="fakesource")`` returns a ``(name, plugin)`` pair registering the
  sources, for ``chronos_app(plugins=["events", fake_source_plugin(src)])``.
"""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from chronos.plugin import CalendarSpec, EventDraft, Source, SourceBatch, SourceError, hookimpl
from chronos.settings import ConfigError  # noqa: F401 - re-exported: what an app with invalid settings raises

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def backends() -> list[str]:
    raw = os.environ.get("CHRONOS_TEST_BACKENDS", "sqlite,postgresql")
    return [b.strip() for b in raw.split(",") if b.strip()]


@dataclass
class TestDatabase:
    backend: str
    url: str
    schema: str | None = None

    def settings_section(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url}
        if self.schema:
            out["schema"] = self.schema
        return out


async def _pg_admin(url: str, sql: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(sql)
    finally:
        await engine.dispose()


@asynccontextmanager
async def temporary_database(backend: str, tmp_path: Path) -> AsyncIterator[TestDatabase]:
    """A fresh, empty database for one test: a SQLite file or a PostgreSQL schema."""
    if backend == "sqlite":
        yield TestDatabase("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'chronos-test.db'}")
        return
    if backend != "postgresql":
        raise ValueError(f"unknown test backend {backend!r}")
    url = os.environ.get("CHRONOS_TEST_PG_URL", DEFAULT_PG_URL)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        await _pg_admin(url, f'CREATE SCHEMA "{schema}"')
    except Exception as exc:  # noqa: BLE001
        pytest.fail(
            f"PostgreSQL at {url} is unreachable ({type(exc).__name__}: {exc}); start it, never skip", pytrace=False
        )
    try:
        yield TestDatabase("postgresql", url, schema)
    finally:
        await _pg_admin(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=backends())
def db_backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test: 'sqlite' or 'postgresql'."""
    return str(request.param)


@pytest.fixture
async def database(db_backend: str, tmp_path: Path) -> AsyncIterator[TestDatabase]:
    async with temporary_database(db_backend, tmp_path) as db:
        yield db


def make_test_settings(
    database: TestDatabase,
    config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    path: str | Path | None = None,
) -> Any:
    """Settings for a test: the test database, fast heartbeats, plus ``config``
    sections; ``env`` stands in for the process environment and ``path`` is a
    config file read first (``config`` sections still win)."""
    from chronos.settings import load_settings

    sections: dict[str, Any] = {
        "database": database.settings_section(),
        "scheduler": {"heartbeat_seconds": 0.5, "leader_retry_seconds": 0.5},
        "logging": {"level": "warning"},
    }
    for key, value in (config or {}).items():
        if isinstance(value, dict) and isinstance(sections.get(key), dict):
            sections[key] = {**sections[key], **value}
        else:
            sections[key] = value
    return load_settings(path=path, env=env or {}, **sections)


def make_test_app(
    database: TestDatabase,
    plugins: Iterable[Any] | None = (),
    config: dict[str, Any] | None = None,
    *,
    run_jobs: bool = False,
    env: dict[str, str] | None = None,
    path: str | Path | None = None,
) -> Any:
    """An app (lifespan not started; see :func:`running_app`) on the test database.

    ``env`` stands in for the process environment (``CHRONOS__…`` variables,
    secrets plugins read from it); the real environment is never consulted.
    """
    from chronos.app import create_app

    settings = make_test_settings(database, config, env, path)
    return create_app(settings, plugins=None if plugins is None else list(plugins), run_jobs=run_jobs, env=env or {})


@asynccontextmanager
async def running_app(app: Any) -> AsyncIterator[Any]:
    """Run an app's lifespan (startup, then shutdown on exit)."""
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def chronos_app(database: TestDatabase) -> Callable[..., Any]:
    """Factory: ``async with chronos_app(plugins=[...], config={...}) as app``.

    ``plugins`` are entry-point names or ``(name, object)`` pairs; ``None``
    loads every installed plugin. ``run_jobs`` defaults to False so schedules
    do not fire during a test; jobs still run on demand.
    """

    @asynccontextmanager
    async def factory(
        plugins: Iterable[Any] | None = (),
        config: dict[str, Any] | None = None,
        run_jobs: bool = False,
        env: dict[str, str] | None = None,
    ) -> AsyncIterator[Any]:
        async with running_app(make_test_app(database, plugins, config, run_jobs=run_jobs, env=env)) as app:
            yield app

    return factory


def runtime_of(app: Any) -> Any:
    """The app's :class:`chronos.runtime.Runtime`: ``.ctx``, ``.host``, ``.pipeline``, ``.runner``."""
    return app.state.runtime


async def create_test_key(app: Any, scopes: Iterable[str], systems: Iterable[str] = (), name: str = "test") -> str:
    """Create a key directly in the app's database; returns the secret."""
    from chronos.keys import create_key

    ctx = app.state.chronos
    async with ctx.db.write() as s:
        _row, secret = await create_key(
            s, name=name, scopes=list(scopes), known_scopes=ctx.scopes, systems=list(systems)
        )
    return secret


async def audit_entries(app: Any, entity: str | None = None, entity_id: Any = None) -> list[dict[str, Any]]:
    """The app's audit log, oldest first, as dicts (``action``, ``entity``,
    ``entity_id``, ``change``, ``actor``…), optionally for one entity."""
    from sqlalchemy import select

    from chronos.db.models import AuditEntry

    q = select(AuditEntry).order_by(AuditEntry.id)
    if entity is not None:
        q = q.where(AuditEntry.entity == entity)
    if entity_id is not None:
        q = q.where(AuditEntry.entity_id == str(entity_id))
    async with app.state.chronos.db.read() as s:
        rows = (await s.execute(q)).scalars().all()
    return [{c.name: getattr(r, c.key) for c in AuditEntry.__mapper__.columns} for r in rows]


async def sync_now(app: Any, source: str, calendar_id: str, *, full: bool = False) -> Any:
    """Run one sync of a calendar to the end; returns the run as ``GET
    /api/v1/sync/runs/{id}`` shows it (attributes; ``errors`` is a list of dicts)."""
    from types import SimpleNamespace

    from chronos.db.sync_models import SyncRun
    from chronos.sync_api import SyncRunOut

    run_id = await runtime_of(app).pipeline.run(source, calendar_id, full=full)
    async with app.state.chronos.db.read() as s:
        row = await s.get(SyncRun, run_id)
    return SimpleNamespace(**SyncRunOut.model_validate(row, from_attributes=True).model_dump())


async def migrate_database(database: TestDatabase, migrations: Iterable[Any]) -> dict[str, list[str]]:
    """Bring the kernel and ``migrations`` (each plugin's ``register_migrations()``
    records) to head on the test database; returns what was applied per owner."""
    from chronos.db.migrate import migrate

    return await migrate(database.url, list(migrations), schema=database.schema)


async def downgrade_database(database: TestDatabase, migrations: Iterable[Any], owner: str, target: str) -> None:
    """Take ``owner``'s tables back to revision ``target`` (test a revision's downgrade)."""
    from chronos.db.migrate import downgrade

    await downgrade(database.url, list(migrations), owner, target, schema=database.schema)


async def schema_drift(database: TestDatabase, tables: Iterable[str]) -> list[Any]:
    """Differences between the migrated test database and the models of
    ``tables`` (empty when a plugin's revisions match its models). Run after an
    app on ``database`` has started, so migrations were applied."""
    from chronos.db.migrate import diff_models

    wanted = set(tables)
    return [d for d in await diff_models(database.url, schema=database.schema) if _table_of(d) in wanted]


def _table_of(diff: Any) -> str | None:
    op = diff[0] if isinstance(diff, list) else diff
    for item in op[1:]:
        if hasattr(item, "columns") and not hasattr(item, "table") and getattr(item, "name", None):
            return str(item.name)  # a table
        table = getattr(item, "table", None)  # an index or a column's table
        if table is not None and getattr(table, "name", None):
            return str(table.name)
        if isinstance(item, str):
            return item
    return None


def client(app: Any, secret: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://chronos.test", headers=headers, **kwargs)


@pytest.fixture
async def api_client() -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``c = await api_client(app, scopes=["events.read"])`` -> httpx.AsyncClient."""
    opened: list[httpx.AsyncClient] = []

    async def factory(app: Any, scopes: Iterable[str] = ("admin",), systems: Iterable[str] = ()) -> httpx.AsyncClient:
        secret = await create_test_key(app, scopes, systems)
        c = client(app, secret)
        opened.append(c)
        return c

    yield factory
    await asyncio.gather(*(c.aclose() for c in opened))


DEFAULT_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

_Key = tuple[str, str]  # (uid, recurrence_id or "")


def _key(draft: EventDraft) -> _Key:
    return (draft.uid, draft.recurrence_id or "")


class FakeSource(Source):
    """An in-memory source for tests (see the module docstring)."""

    name = "fake"

    def __init__(
        self,
        calendars: Iterable[str | tuple[str, bool] | CalendarSpec] = ("cal",),
        *,
        writable: bool = False,
        mode: Literal["full", "log"] = "full",
        page: int = 100,
        interval_seconds: float = 3600,
    ) -> None:
        self.writable = writable
        self.mode: Literal["full", "log"] = mode
        self.page = page
        self.specs: dict[str, CalendarSpec] = {}
        for cal in calendars:
            if isinstance(cal, CalendarSpec):
                spec = cal
            elif isinstance(cal, tuple):
                spec = CalendarSpec(cal[0], interval_seconds=interval_seconds, read_only=cal[1])
            else:
                spec = CalendarSpec(cal, interval_seconds=interval_seconds, read_only=not writable)
            self.specs[spec.id] = spec
        self.items: dict[str, dict[_Key, EventDraft]] = {c: {} for c in self.specs}
        self.errors: dict[str, list[tuple[str, str]]] = {c: [] for c in self.specs}
        self.changes: dict[str, list[tuple[Literal["upsert", "delete"], EventDraft | _Key]]] = {
            c: [] for c in self.specs
        }
        self.versions: dict[str, int] = {c: 0 for c in self.specs}
        self._dirty: set[str] = set(self.specs)
        self.fail_at: int | None = None
        self.fail_deletes = False
        self.gate: asyncio.Event | None = None
        self.fetched: list[dict[str, Any] | None] = []
        self.deleted: list[tuple[str, str]] = []

    # -- entries -------------------------------------------------------------------------

    def _cal(self, calendar: str | None) -> str:
        if calendar is None:
            return next(iter(self.specs))
        if calendar not in self.specs:
            raise KeyError(f"FakeSource has no calendar {calendar!r} (it has {sorted(self.specs)})")
        return calendar

    def put(
        self, uid: str, title: str, *, calendar: str | None = None, start: datetime | None = None, **fields: Any
    ) -> EventDraft:
        """Add or replace the entry ``uid`` (``fields`` are EventDraft fields); returns its draft."""
        start = start or DEFAULT_START
        fields.setdefault("end", start + timedelta(hours=1) if isinstance(start, datetime) else None)
        draft = EventDraft(uid=uid, start=start, title=title, **fields)
        self.add(draft, calendar=calendar)
        return draft

    def add(self, *drafts: EventDraft, calendar: str | None = None) -> None:
        """Add or replace entries by ``(uid, recurrence_id)``."""
        cal = self._cal(calendar)
        for draft in drafts:
            self.items[cal][_key(draft)] = copy.deepcopy(draft)
            self.changes[cal].append(("upsert", copy.deepcopy(draft)))
        self._dirty.add(cal)

    def replace(self, *drafts: EventDraft, calendar: str | None = None) -> None:
        """Make ``drafts`` the calendar's whole listing (removing every other entry)."""
        cal = self._cal(calendar)
        keep = {_key(d) for d in drafts}
        for key in [k for k in self.items[cal] if k not in keep]:
            self.remove(key[0], key[1], calendar=cal)
        self.add(*drafts, calendar=cal)

    def remove(self, uid: str, recurrence_id: str = "", *, calendar: str | None = None) -> bool:
        """Remove an entry; False when there was none."""
        cal = self._cal(calendar)
        if self.items[cal].pop((uid, recurrence_id), None) is None:
            return False
        self.changes[cal].append(("delete", (uid, recurrence_id)))
        self._dirty.add(cal)
        return True

    def entries(self, calendar: str | None = None) -> list[EventDraft]:
        return list(self.items[self._cal(calendar)].values())

    # -- the Source contract -------------------------------------------------------------

    def calendars(self) -> list[CalendarSpec]:
        return [replace(spec) for spec in self.specs.values()]

    async def _before_batch(self, index: int) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_at == index:
            raise SourceError(f"connection lost after {index} page(s)")

    async def fetch(self, calendar: CalendarSpec, cursor: dict[str, Any] | None) -> AsyncIterator[SourceBatch]:
        cal = self._cal(calendar.id)
        self.fetched.append(copy.deepcopy(cursor))
        page = max(1, self.page)
        if self.mode == "log":
            pos = int(cursor["pos"]) if cursor else 0
            changes = self.changes[cal]
            index = 0
            while pos < len(changes):
                await self._before_batch(index)
                chunk = changes[pos : pos + page]
                pos += len(chunk)
                yield SourceBatch(
                    drafts=[copy.deepcopy(d) for op, d in chunk if op == "upsert" and isinstance(d, EventDraft)],
                    deleted=[d for op, d in chunk if op == "delete" and isinstance(d, tuple)],
                    cursor={"pos": pos},
                )
                index += 1
            return
        if cal in self._dirty:
            self._dirty.discard(cal)
            self.versions[cal] += 1
        version = self.versions[cal]
        if cursor and cursor.get("version") == version:
            yield SourceBatch(not_modified=True)
            return
        items = list(self.items[cal].values())
        pages = [items[i : i + page] for i in range(0, len(items), page)] or [[]]
        for index, listed in enumerate(pages):
            await self._before_batch(index)
            last = index == len(pages) - 1
            yield SourceBatch(
                drafts=[copy.deepcopy(d) for d in listed],
                errors=list(self.errors[cal]) if last else [],
                full=True,
                complete=last,
                cursor={"version": version} if last else None,
            )

    def can_delete(self, calendar: CalendarSpec) -> bool:
        spec = self.specs.get(calendar.id)
        return self.writable and spec is not None and not spec.read_only

    async def delete_entry(self, calendar: CalendarSpec, uid: str, recurrence_id: str = "") -> None:
        if not self.can_delete(calendar):
            raise SourceError(f"source {self.name!r} is read-only for calendar {calendar.id!r}")
        if self.fail_deletes:
            raise SourceError("the server said 503")
        self.deleted.append((uid, recurrence_id))
        self.remove(uid, recurrence_id, calendar=calendar.id)


class _SourcePlugin:
    """A plugin object contributing sources through ``register_sources``."""

    def __init__(self, sources: Iterable[Source]) -> None:
        self.sources = list(sources)

    @hookimpl
    def register_sources(self) -> list[Source]:
        return list(self.sources)


def fake_source_plugin(*sources: Source, name: str = "fakesource") -> tuple[str, Any]:
    """``(name, plugin)`` registering ``sources``: pass it in ``chronos_app(plugins=[...])``."""
    return (name, _SourcePlugin(sources))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*names): run only on these storage backends")
    config.addinivalue_line(
        "markers",
        "exercises_hook(*names): the test asserts the effect of these hookspecs (the kernel checks every hook has one)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect backend parametrisations a ``@pytest.mark.backends(...)`` test does not want."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("backends")
        backend = getattr(getattr(item, "callspec", None), "params", {}).get("db_backend")
        (drop if marker is not None and backend is not None and backend not in marker.args else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
