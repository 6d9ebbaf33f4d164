"""The sync pipeline engine: Source → Normalizers → Enrichers → EventStore → Sinks.

For each (source, calendar) a run loads the saved cursor, iterates
``source.fetch()`` and commits every batch in ONE write transaction together
with the cursor and the run's counters, so a crash replays a batch and never
skips one. Inside the batch a savepoint guards the fast path (all items at
once); when a stage raises, the savepoint is rolled back and the batch is
replayed item by item, each in its own savepoint, so only the items a stage
fails on are left out and reported (stage, plugin, message). A failed item is
not stored, so the next sync offers it again.

A full listing (``SourceBatch.full``) deletes the calendar's local events the
listing did not contain only once the source says it is ``complete``.

Runs of one source+calendar never overlap: an in-process lock, plus
``pg_try_advisory_lock`` on PostgreSQL so that other processes skip (the API
answers 409).

The same stages serve :class:`KernelEventIntake`, which ingests drafts for a
local calendar synchronously (API- and template-created events) and re-runs
the enrichers when a local edit changes an event's text (``rederive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import gc
import hashlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from chronos import metrics
from chronos.contracts import ical
from chronos.contracts.events import (
    WHOLE_SERIES,
    ApplyResult,
    CalendarSpec,
    CanonicalEvent,
    Enricher,
    EventDraft,
    EventIntake,
    EventKey,
    EventStore,
    Normalizer,
    Sink,
    SinkBatch,
    Source,
    SourceBatch,
    SourceError,
    StoredEvent,
)
from chronos.contracts.outbox import Outbox
from chronos.db.base import utcnow
from chronos.db.sync_models import SyncRun, SyncState
from chronos.exceptions import InvalidInput
from chronos.identity import Principal
from chronos.records import Job, JobContext, SyncTrigger
from chronos.redact import redact_urls

if TYPE_CHECKING:  # pragma: no cover
    from chronos.context import PluginContext
    from chronos.host import PluginHost

log = structlog.get_logger("chronos.pipeline")

#: At most this many item errors are kept on a run row (``failed`` stays exact).
MAX_RECORDED_ERRORS = 100
_JOB_PART_RE = re.compile(r"[^a-z0-9_-]+")
_KEEP: Any = object()  # "leave the saved cursor as it is"


class SyncBusy(Exception):
    """A run of this source+calendar is in progress (here or in another process)."""


class UnknownCalendar(LookupError):
    """No enabled source has this name, or the source has no such calendar."""


class NoEventStore(RuntimeError):
    """No enabled plugin provides :class:`EventStore`."""


class StageFailure(Exception):
    """A stage raised: which stage, which plugin and record, and the error."""

    def __init__(self, stage: str, plugin: str, name: str, exc: BaseException) -> None:
        super().__init__(f"{stage} {plugin}/{name}: {type(exc).__name__}: {exc}")
        self.stage, self.plugin, self.name, self.exc = stage, plugin, name, exc

    @property
    def message(self) -> str:
        return _describe(self.exc)


class RunOverBudget(Exception):
    """A run took longer than ``sync.run_budget_seconds``; the message says what to do."""


#: What an exception raised without a message means, for the people reading runs.
_WITHOUT_MESSAGE = {
    TimeoutError: "an operation timed out without saying which (a server or the database did not answer in time);"
    " the next run tries again — if it keeps happening, check the source's server and its timeout settings",
    ConnectionError: "a connection was lost without details; the next run tries again",
}


def _describe(exc: BaseException) -> str:
    """A source's or stage's error as runs, logs and the API show it: URLs reduced to scheme and host
    (a private feed's secret is in its path or query string). An exception raised without a message
    still gets one (its kind, what it usually means, where to look)."""
    text = str(exc).strip()
    if isinstance(exc, (SourceError, RunOverBudget)) and text:
        return redact_urls(text)[:1000]
    if not text:
        hint = next((h for kind, h in _WITHOUT_MESSAGE.items() if isinstance(exc, kind)), None)
        text = hint or "raised without a message; the service log has its traceback under this run id"
    return redact_urls(f"{type(exc).__name__}: {text}")[:1000]


async def _within_budget(
    batches: AsyncIterator[SourceBatch],
    ref: CalendarRef,
    budget: float,
    tally: RunTally,
    slots: asyncio.Semaphore,
) -> AsyncIterator[SourceBatch]:
    """The source's batches, once one of the process's run ``slots`` is free
    (``sync.max_concurrent_runs``), until ``budget`` seconds have passed, then
    :class:`RunOverBudget`.

    The clock starts with the slot and runs while the source works and while
    batches are stored; a source waiting (a slow server, a long expansion) is
    interrupted at the deadline. The run then ends before a complete listing,
    so nothing is deleted for it.
    """
    loop = asyncio.get_running_loop()
    await slots.acquire()
    deadline = loop.time() + budget

    def over(doing: str) -> RunOverBudget:
        source, calendar_id = ref.key
        return RunOverBudget(
            f"calendar {calendar_id!r} ({source}): sync stopped after {budget:g} s (sync.run_budget_seconds)"
            f" {doing}; the last good data is kept; raise sync.run_budget_seconds or shorten the calendar's"
            " window (horizon_days)"
        )

    try:
        while True:
            if loop.time() >= deadline:
                raise over(f"after storing batch {tally.batches}")
            try:
                async with asyncio.timeout_at(deadline) as limit:
                    batch = await anext(batches)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if limit.expired():
                    raise over(f"while waiting for the source (after {tally.batches} batch(es))") from None
                raise
            yield batch
    finally:
        slots.release()
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass
class ItemFailure:
    stage: str
    plugin: str
    name: str
    uid: str
    recurrence_id: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {
            "stage": self.stage,
            "plugin": self.plugin,
            "name": self.name,
            "uid": self.uid,
            "recurrence_id": self.recurrence_id,
            "message": redact_urls(self.message),
        }


@dataclass
class Outcome:
    """What processing a list of items did (the store's result plus failures)."""

    result: ApplyResult = field(default_factory=ApplyResult)
    failures: list[ItemFailure] = field(default_factory=list)

    def merge(self, other: Outcome) -> None:
        r, o = self.result, other.result
        r.added += o.added
        r.updated += o.updated
        r.previous.update(o.previous)
        r.deleted += o.deleted
        r.unchanged += o.unchanged
        r.suppressed += o.suppressed
        self.failures += other.failures


@dataclass
class RunTally:
    """Counters of one run, written to its row after every batch."""

    batches: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        r = outcome.result
        self.added += len(r.added)
        self.updated += len(r.updated)
        self.deleted += len(r.deleted)
        # Keys hidden by a tombstone cost no write either.
        self.unchanged += r.unchanged + r.suppressed
        self.failed += len(outcome.failures)
        room = MAX_RECORDED_ERRORS - len(self.errors)
        if room > 0:
            self.errors += [f.as_dict() for f in outcome.failures[:room]]

    def values(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "failed": self.failed,
            "errors": list(self.errors),
        }


@dataclass(frozen=True)
class CalendarRef:
    """One syncable calendar: the plugin and source serving it and its spec."""

    plugin: str
    source: Source
    calendar: CalendarSpec

    @property
    def key(self) -> tuple[str, str]:
        return (self.source.name, self.calendar.id)


_collector_pauses = 0  # batches in progress in this process that paused the cyclic collector


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is processed.

    A batch allocates a few dozen containers per event (drafts, events, rows) that live until
    it ends, so the collector's young passes keep promoting them and every few batches a full
    pass walks every object of the process (a large share of a big sync's time). Paused, they
    are freed by reference counting when the batch ends, before any pass sees them; the
    collector runs again after the batch. Batches of concurrent runs share one pause; a
    collector disabled by someone else stays disabled.
    """
    global _collector_pauses
    if _collector_pauses == 0 and not gc.isenabled():
        yield
        return
    _collector_pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _collector_pauses -= 1
        if _collector_pauses == 0:
            gc.enable()


def _clone(draft: EventDraft) -> EventDraft:
    """A copy stages may mutate while the original stays pristine for a replay."""
    # object.__new__ + __dict__ is several times cheaper than copy.copy on a dataclass.
    out = object.__new__(EventDraft)
    out.__dict__.update(draft.__dict__)
    out.tags = list(draft.tags)
    out.metadata = {k: copy.deepcopy(v) if isinstance(v, (dict, list)) else v for k, v in draft.metadata.items()}
    return out


async def _expand_series(
    s: AsyncSession, store: EventStore, source: str, calendar_id: str, deletions: list[EventKey]
) -> list[EventKey]:
    """``(uid, "*")`` tombstones become every stored entry of that uid (the series and its instances)."""
    series = {k.uid for k in deletions if k.recurrence_id == WHOLE_SERIES}
    stored = sorted(await store.keys_of(s, source, calendar_id, series))
    return [k for k in deletions if k.recurrence_id != WHOLE_SERIES] + stored


def job_name(source: str, calendar_id: str, taken: set[str] | None = None) -> str:
    """``sync.<source>.<calendar>`` as a valid, unique job name."""

    def part(value: str) -> str:
        return _JOB_PART_RE.sub("-", value.lower()).strip("-") or "x"

    name = f"sync.{part(source)}.{part(calendar_id)}"
    if len(name) > 63 or (taken is not None and name in taken):
        digest = hashlib.sha1(f"{source}\0{calendar_id}".encode()).hexdigest()[:8]
        name = f"{name[:54]}.{digest}"
    return name


def sqlite_lock_file(url: str, key: tuple[str, str]) -> Path | None:
    """The file whose ``flock`` is the run lock of ``key`` on a SQLite database
    (None for an in-memory database: no other process can see it)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    digest = hashlib.sha256(f"{key[0]}\0{key[1]}".encode()).hexdigest()[:24]
    return Path(database).expanduser().resolve().parent / f"{Path(database).name}.locks" / f"sync-{digest}.lock"


@dataclass(frozen=True)
class BatchTarget:
    """Where one batch goes: its transaction, the store, its calendar and run (None for API intake)."""

    session: AsyncSession
    store: EventStore
    source: str
    calendar_id: str
    run_id: int | None
    principal: Principal | None = None  # the API caller (intake); None for syncs


class _AdvisoryLocks:
    """Every run lock of this process as advisory locks held by ONE PostgreSQL connection.

    A connection per running run would take the pool's connections away from the
    runs' own reads and writes: with more calendars syncing than the pool holds,
    every run (and every request) waited for a connection until the pool timed
    out. The connection is opened at the first lock and kept; if it breaks, the
    server has dropped its locks with it, and the next lock opens a new one.
    """

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.conn: Any = None
        self._mutex = asyncio.Lock()

    async def try_lock(self, key: int) -> bool:
        async with self._mutex:
            for fresh in (self.conn is None, True):
                if self.conn is None:
                    self.conn = await self.ctx.db.reader.connect()
                try:
                    got = (await self.conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
                    await self.conn.commit()
                    return bool(got)
                except Exception:
                    await self._drop()
                    if fresh:
                        raise
                    # The kept connection broke (a database restart, say): once more on a new one.
                except BaseException:
                    await self._drop()
                    raise
            raise AssertionError("unreachable")

    async def unlock(self, key: int) -> None:
        async with self._mutex:
            if self.conn is None:
                return  # the connection broke: its locks are gone already
            try:
                await self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                await self.conn.commit()
            except Exception as exc:  # noqa: BLE001 - a dropped connection has dropped its locks too
                log.warning("sync_unlock_failed", error=_describe(exc))
                await self._drop()
            except BaseException:
                await self._drop()
                raise

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        """Let go of every lock (the runtime stops; the runs have ended)."""
        async with self._mutex:
            await self._drop()


class _Lock:
    """A held run lock: the in-process part and the cross-process part (an
    advisory lock on the process's lock connection on PostgreSQL, a locked
    file on SQLite)."""

    def __init__(self, pipeline: SyncPipeline, key: tuple[str, str], pg_key: int | None = None, file: Any = None):
        self.pipeline, self.key, self.pg_key, self.file = pipeline, key, pg_key, file

    async def release(self) -> None:
        try:
            if self.file is not None:
                self.file.close()  # closing the descriptor drops the flock
            if self.pg_key is not None:
                await self.pipeline._advisory.unlock(self.pg_key)
        finally:
            self.pipeline._held.discard(self.key)


class _Interrupted(Exception):
    """A run ended between batches because the service is stopping."""

    def __init__(self, batches: int) -> None:
        super().__init__(f"stopped after batch {batches}")
        self.batches = batches


class SyncPipeline:
    """The engine; built once per app by the runtime, after services (``Runtime.pipeline``)."""

    def __init__(self, ctx: PluginContext, host: PluginHost) -> None:
        self.ctx = ctx
        self.sources: dict[str, tuple[str, Source]] = {}
        for plugin, src in host.sources():
            self.sources[src.name] = (plugin, src)
        self.normalizers: list[tuple[str, Normalizer]] = sorted(
            host.normalizers(), key=lambda p: (p[1].order, p[1].name)
        )
        self.enrichers: list[tuple[str, Enricher]] = sorted(host.enrichers(), key=lambda p: (p[1].order, p[1].name))
        self.sinks: list[tuple[str, Sink]] = sorted(host.sinks(), key=lambda p: (p[1].order, p[1].name))
        self.calendars: dict[tuple[str, str], CalendarRef] = {}
        for name, (plugin, src) in sorted(self.sources.items()):
            try:
                specs = list(src.calendars())
            except Exception as exc:  # noqa: BLE001 - one broken source must not stop the service
                log.error("source_calendars_failed", plugin=plugin, source=name, error=_describe(exc))
                metrics.PLUGIN_ERRORS.labels(plugin=plugin).inc()
                continue
            for spec in specs:
                ref = CalendarRef(plugin, src, spec)
                if ref.key in self.calendars:
                    raise ValueError(f"source {name!r} lists calendar {spec.id!r} twice")
                self.calendars[ref.key] = ref
        self._held: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        ical.expansion(ctx.settings.kernel.sync.expansion_threads)
        self._advisory = _AdvisoryLocks(ctx)
        self._slots = asyncio.Semaphore(ctx.settings.kernel.sync.max_concurrent_runs)
        self._executing: set[int] = set()  # ids of the runs in _execute
        self._interrupting: set[int] = set()  # of those, the ones stop() ends after their current batch

    # -- lookup and scheduling --------------------------------------------------------

    def calendar(self, source: str, calendar_id: str) -> CalendarRef:
        if source not in self.sources:
            raise UnknownCalendar(f"no enabled source named {source!r}")
        ref = self.calendars.get((source, calendar_id))
        if ref is None:
            raise UnknownCalendar(f"source {source!r} has no calendar {calendar_id!r}")
        return ref

    def select(self, source: str | None = None, calendar_id: str | None = None) -> list[CalendarRef]:
        """Calendars matching the optional filters; ``UnknownCalendar`` if none can."""
        if source is not None and source not in self.sources:
            raise UnknownCalendar(f"no enabled source named {source!r}")
        refs = [r for k, r in sorted(self.calendars.items()) if source is None or k[0] == source]
        if calendar_id is not None:
            refs = [r for r in refs if r.calendar.id == calendar_id]
            if not refs:
                where = f"source {source!r}" if source else "any enabled source"
                raise UnknownCalendar(f"{where} has no calendar {calendar_id!r}")
        return refs

    def jobs(self) -> list[tuple[str, Job]]:
        """One job per calendar (``sync.<source>.<calendar>``) on its interval, with jitter."""
        out: list[tuple[str, Job]] = []
        taken: set[str] = set()
        for (source, calendar_id), ref in sorted(self.calendars.items()):
            name = job_name(source, calendar_id, taken)
            taken.add(name)
            interval = ref.calendar.interval_seconds
            scheduled = interval is not None and interval > 0
            out.append(
                (
                    "kernel",
                    Job(
                        name,
                        partial(self._job, source, calendar_id),
                        interval_seconds=interval if scheduled else None,
                        # Spread calendars that share an interval so they do not all fire at once.
                        jitter_seconds=min(interval * 0.1, 60.0) if scheduled else 0,
                        run_at_start=True,
                        description=f"Sync calendar {calendar_id!r} from source {source!r}",
                    ),
                )
            )
        return out

    async def _job(self, source: str, calendar_id: str, job: JobContext) -> dict[str, Any]:
        try:
            run_id = await self.run(source, calendar_id, trigger=job.trigger)
        except SyncBusy:
            log.info("sync_skipped_busy", source=source, calendar_id=calendar_id)
            return {"skipped": "already running"}
        return {"run_id": run_id}

    # -- locking -----------------------------------------------------------------------

    def _pg_key(self, key: tuple[str, str]) -> int:
        # Schemas are separate deployments sharing one server: the schema is part of the key.
        raw = f"chronos.sync\0{self.ctx.db.schema or ''}\0{key[0]}\0{key[1]}".encode()
        return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big", signed=True)

    async def _acquire(self, key: tuple[str, str]) -> _Lock:
        if key in self._held:
            raise SyncBusy(f"a sync of {key[0]}/{key[1]} is already running")
        self._held.add(key)
        db = self.ctx.db
        if db.is_sqlite:
            path = sqlite_lock_file(db.url, key)
            if path is None:
                return _Lock(self, key)
            try:
                path.parent.mkdir(exist_ok=True)
                fh = open(path, "a+b")  # noqa: SIM115 - held until the run ends
            except BaseException:
                self._held.discard(key)
                raise
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                self._held.discard(key)
                raise SyncBusy(f"a sync of {key[0]}/{key[1]} is already running in another process") from None
            except BaseException:
                fh.close()
                self._held.discard(key)
                raise
            return _Lock(self, key, file=fh)
        pg_key = self._pg_key(key)
        try:
            got = await self._advisory.try_lock(pg_key)
        except BaseException:
            self._held.discard(key)
            raise
        if not got:
            self._held.discard(key)
            raise SyncBusy(f"a sync of {key[0]}/{key[1]} is already running in another process")
        return _Lock(self, key, pg_key)

    def is_running(self, source: str, calendar_id: str) -> bool:
        return (source, calendar_id) in self._held

    # -- starting runs -------------------------------------------------------------------

    async def run(self, source: str, calendar_id: str, *, trigger: SyncTrigger = "manual", full: bool = False) -> int:
        """Run one sync to the end; returns the run id. Raises ``SyncBusy``/``UnknownCalendar``."""
        ref = self.calendar(source, calendar_id)
        lock = await self._acquire(ref.key)
        try:
            run_id = await self._create_run(ref, trigger, full)
            await self._execute(run_id, ref, full)
        finally:
            await lock.release()
        return run_id

    async def start(
        self,
        source: str,
        calendar_id: str,
        *,
        trigger: SyncTrigger = "manual",
        full: bool = False,
        audit: Callable[[AsyncSession, int], Awaitable[Any]] | None = None,
    ) -> int:
        """Create the run row, then run it in the background; returns the run id.

        ``audit(session, run_id)`` is awaited inside the transaction that creates
        the run row (the API writes its audit entry there).
        """
        ref = self.calendar(source, calendar_id)
        lock = await self._acquire(ref.key)
        try:
            run_id = await self._create_run(ref, trigger, full, audit)
        except BaseException:
            await lock.release()
            raise
        self._launch(run_id, ref, full, lock)
        return run_id

    async def start_many(
        self,
        refs: list[CalendarRef],
        *,
        trigger: SyncTrigger = "manual",
        full: bool = False,
        audit: Callable[[AsyncSession, CalendarRef, int], Awaitable[Any]] | None = None,
        wait: float | None = None,
    ) -> tuple[list[tuple[CalendarRef, int]], list[tuple[CalendarRef, str]]]:
        """Start a run of each calendar in ``refs`` that is not running: ``(started, skipped)``,
        ``started`` as ``(ref, run_id)``, ``skipped`` as ``(ref, why)``.

        The run rows are written in ONE transaction, so starting every calendar
        costs one turn at the database, not one per calendar. With ``wait``, giving
        up after that many seconds (the database busy with another write, no free
        connection) raises ``TimeoutError`` and starts nothing.
        """
        locks: list[tuple[CalendarRef, _Lock]] = []
        skipped: list[tuple[CalendarRef, str]] = []
        started: list[tuple[CalendarRef, int]] = []
        try:
            async with asyncio.timeout(wait):
                for ref in refs:
                    try:
                        locks.append((ref, await self._acquire(ref.key)))
                    except SyncBusy as exc:
                        skipped.append((ref, str(exc)))
                if locks:
                    async with self.ctx.db.write() as s:
                        for ref, _lock in locks:
                            run_id = await self._add_run(s, ref, trigger, full)
                            if audit is not None:
                                await audit(s, ref, run_id)
                            started.append((ref, run_id))
        except BaseException:
            for _ref, lock in locks:
                await lock.release()
            raise
        for (ref, lock), (_same, run_id) in zip(locks, started, strict=True):
            self._launch(run_id, ref, full, lock)
        return started, skipped

    def _launch(self, run_id: int, ref: CalendarRef, full: bool, lock: _Lock) -> None:
        source, calendar_id = ref.key
        task = asyncio.create_task(self._background(run_id, ref, full, lock), name=f"sync:{source}:{calendar_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background(self, run_id: int, ref: CalendarRef, full: bool, lock: _Lock) -> None:
        try:
            await self._execute(run_id, ref, full)
        except Exception as exc:  # noqa: BLE001 - already recorded on the run; never an unhandled task error
            log.error("sync_failed", run_id=run_id, error=_describe(exc))
        finally:
            await lock.release()

    async def wait(self) -> None:
        """Wait for the runs started in the background (tests, CLI)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self, timeout: float = 20.0) -> None:
        """Have running syncs stop after their current batch (whose data and cursor are committed
        together, so the next run goes on from there); cancel those still running after ``timeout``."""
        # Runs executing now, in the background or inside a job (which the job runner waits for).
        self._interrupting |= self._executing
        tasks = [t for t in self._tasks if not t.done()]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def close_sources(self) -> None:
        """Await every source's ``aclose`` (runtime shutdown); one failing does not stop the others.
        Then close the connection that held the run locks."""
        for name, (plugin, src) in sorted(self.sources.items()):
            try:
                await src.aclose()
            except Exception as exc:  # noqa: BLE001
                log.error("source_close_failed", plugin=plugin, source=name, error=_describe(exc))
        await self._advisory.close()

    async def _create_run(
        self,
        ref: CalendarRef,
        trigger: SyncTrigger,
        full: bool,
        audit: Callable[[AsyncSession, int], Awaitable[Any]] | None = None,
    ) -> int:
        async with self.ctx.db.write() as s:
            run_id = await self._add_run(s, ref, trigger, full)
            if audit is not None:
                await audit(s, run_id)
            return run_id

    async def _add_run(self, s: AsyncSession, ref: CalendarRef, trigger: SyncTrigger, full: bool) -> int:
        """The run's row (and the calendar's state row the first time), in ``s``."""
        source, calendar_id = ref.key
        now = utcnow()
        # We hold the run lock, so a "running" row of this calendar is left
        # over from a process that died mid-run.
        await s.execute(
            update(SyncRun)
            .where(SyncRun.source == source, SyncRun.calendar_id == calendar_id, SyncRun.status == "running")
            .values(status="error", error="interrupted: the process stopped during the run", finished_at=now)
        )
        row = SyncRun(
            source=source,
            calendar_id=calendar_id,
            trigger=trigger[:16],
            full=full,
            status="running",
            started_at=now,
            errors=[],
        )
        s.add(row)
        if await s.get(SyncState, (source, calendar_id)) is None:
            s.add(SyncState(source=source, calendar_id=calendar_id, updated_at=now))
        await s.flush()
        return row.id

    # -- one run -------------------------------------------------------------------------

    def _store(self) -> EventStore:
        try:
            return self.ctx.service(EventStore)
        except LookupError:
            raise NoEventStore(
                "no enabled plugin provides the event store (EventStore); enable the `events` plugin"
            ) from None

    async def _execute(self, run_id: int, ref: CalendarRef, full: bool) -> None:
        source, calendar_id = ref.key
        started = time.perf_counter()
        tally = RunTally()
        status, error, not_modified = "ok", None, False
        saved_cursor: dict[str, Any] | None = None
        bound = log.bind(run_id=run_id, source=source, calendar_id=calendar_id)
        self._executing.add(run_id)  # until _finish
        try:
            store = self._store()
            async with self.ctx.db.read() as s:
                state = await s.get(SyncState, (source, calendar_id))
                saved_cursor = state.cursor if state is not None else None
            cursor = None if full else saved_cursor
            seen: set[EventKey] = set()
            protected: set[str] = set()  # uids the source could not read: keep what we have
            pending: Any = _KEEP
            failed_any = False
            budget = self.ctx.settings.kernel.sync.run_budget_seconds
            batches = _within_budget(aiter(ref.source.fetch(ref.calendar, cursor)), ref, budget, tally, self._slots)
            try:
                async for batch in batches:
                    if batch.not_modified:
                        not_modified = True
                        if batch.cursor is not None:
                            async with self.ctx.db.write() as s:
                                await self._save(s, run_id, ref, tally, batch.cursor)
                            saved_cursor = batch.cursor
                        break
                    tally.batches += 1
                    for d in batch.drafts:
                        d.source, d.calendar_id = source, calendar_id
                    deletions = [EventKey(source, calendar_id, uid, rid or "") for uid, rid in batch.deleted]
                    if batch.full:
                        seen.update(EventKey(source, calendar_id, d.uid, d.recurrence_id or "") for d in batch.drafts)
                        protected.update(uid for uid, _ in batch.errors)
                    reported = [
                        ItemFailure("source", ref.plugin, source, uid, "", msg[:1000]) for uid, msg in batch.errors
                    ]
                    async with self.ctx.db.write() as s:
                        if any(k.recurrence_id == WHOLE_SERIES for k in deletions):
                            deletions = await _expand_series(s, store, source, calendar_id, deletions)
                        at = BatchTarget(s, store, source, calendar_id, run_id)
                        outcome = await self.process(at, batch.drafts, deletions)
                        outcome.failures[:0] = reported
                        if batch.full and batch.complete:
                            stored = await store.keys(s, source, calendar_id)
                            stale = [k for k in stored if k not in seen and k.uid not in protected]
                            if stale:
                                outcome.merge(await self.process(at, [], stale))
                        tally.add(outcome)
                        failed_any = failed_any or bool(outcome.failures)
                        if batch.cursor is not None:
                            pending = batch.cursor
                        save = pending is not _KEEP and not failed_any and (not batch.full or batch.complete)
                        await self._save(s, run_id, ref, tally, pending if save else _KEEP)
                    if save:
                        saved_cursor, pending = pending, _KEEP
                    if run_id in self._interrupting:
                        raise _Interrupted(tally.batches)
            finally:
                aclose = getattr(batches, "aclose", None)
                if aclose is not None:
                    await aclose()
            status = "partial" if tally.failed else "ok"
        except _Interrupted as stop:
            message = (
                f"interrupted: the service stopped after batch {stop.batches} (its data is stored); the next run"
                " goes on from the last saved cursor"
            )
            await self._finish(run_id, ref, "error", message, tally, saved_cursor, not_modified, started)
            return
        except asyncio.CancelledError:
            await self._finish(
                run_id,
                ref,
                "error",
                "cancelled: the service stopped during the run",
                tally,
                saved_cursor,
                not_modified,
                started,
            )
            raise
        except Exception as exc:  # noqa: BLE001 - a failing source fails its run, not the service
            status, error = "error", _describe(exc)
            expected = (SourceError, NoEventStore, RunOverBudget)
            bound.warning("sync_error", error=error, exc_info=not isinstance(exc, expected))
        await self._finish(run_id, ref, status, error, tally, saved_cursor, not_modified, started)

    async def _save(self, s: AsyncSession, run_id: int, ref: CalendarRef, tally: RunTally, cursor: Any) -> None:
        """Counters (and the cursor, unless ``_KEEP``) in the batch's transaction."""
        values = tally.values()
        if cursor is not _KEEP:
            values["cursor"] = cursor
            await s.execute(
                update(SyncState)
                .where(SyncState.source == ref.source.name, SyncState.calendar_id == ref.calendar.id)
                .values(cursor=cursor, updated_at=utcnow())
            )
        await s.execute(update(SyncRun).where(SyncRun.id == run_id).values(**values))

    async def _finish(
        self,
        run_id: int,
        ref: CalendarRef,
        status: str,
        error: str | None,
        tally: RunTally,
        cursor: dict[str, Any] | None,
        not_modified: bool,
        started: float,
    ) -> None:
        self._executing.discard(run_id)
        self._interrupting.discard(run_id)
        source, calendar_id = ref.key
        now = utcnow()
        duration_ms = int((time.perf_counter() - started) * 1000)
        if status == "partial":
            first = tally.errors[0] if tally.errors else {}
            where = f"{first.get('stage')} {first.get('plugin')}"
            error = f"{tally.failed} item(s) failed; first: {where}: {first.get('message')}"
        if error:
            error = redact_urls(error)
        state_values: dict[str, Any] = {"last_run_id": run_id, "last_status": status, "updated_at": now}
        if status == "ok":
            state_values.update(last_success_at=now, last_error=None)
        else:
            state_values.update(last_error_at=now, last_error=error)
            if status == "partial":
                state_values["last_success_at"] = now
        try:
            async with self.ctx.db.write() as s:
                await s.execute(
                    update(SyncRun)
                    .where(SyncRun.id == run_id)
                    .values(
                        status=status,
                        error=error,
                        finished_at=now,
                        duration_ms=duration_ms,
                        not_modified=not_modified,
                        cursor=cursor,
                        **tally.values(),
                    )
                )
                await s.execute(
                    update(SyncState)
                    .where(SyncState.source == source, SyncState.calendar_id == calendar_id)
                    .values(**state_values)
                )
                if status == "error" and "sync.failed" in self.ctx.event_types and self.ctx.has_service(Outbox):
                    # Published with the run's record: a failure is reported exactly when it is recorded.
                    failure = {"source": source, "calendar_id": calendar_id, "run_id": run_id, "error": error or ""}
                    await self.ctx.service(Outbox).enqueue(s, "sync.failed", failure, calendar_id=calendar_id)
        except Exception as exc:  # noqa: BLE001 - the run's data is committed; only its record is late
            log.error("sync_record_failed", run_id=run_id, error=_describe(exc))
        metrics.SYNC_RUNS.labels(source=source, status=status).inc()
        log.info(
            "sync_run",
            run_id=run_id,
            source=source,
            calendar_id=calendar_id,
            status=status,
            not_modified=not_modified,
            duration_ms=duration_ms,
            added=tally.added,
            updated=tally.updated,
            unchanged=tally.unchanged,
            deleted=tally.deleted,
            failed=tally.failed,
            error=error,
        )

    # -- the stages ----------------------------------------------------------------------

    async def process(self, at: BatchTarget, drafts: list[EventDraft], deletions: list[EventKey]) -> Outcome:
        """Run ``drafts`` and ``deletions`` through every stage with failure isolation.

        First all at once inside a savepoint; if a stage raises, roll the
        savepoint back and replay item by item, each in its own savepoint.
        """
        if not drafts and not deletions:
            return Outcome()
        with _collector_paused():
            return await self._process(at, drafts, deletions)

    async def _process(self, at: BatchTarget, drafts: list[EventDraft], deletions: list[EventKey]) -> Outcome:
        try:
            return await self._isolated(at, drafts, deletions)
        except Exception as exc:  # noqa: BLE001 - isolate below
            if len(drafts) + len(deletions) == 1:
                return Outcome(failures=[self._failure(exc, drafts[0] if drafts else deletions[0])])
        outcome = Outcome()
        items: list[tuple[list[EventDraft], list[EventKey], EventDraft | EventKey]] = [
            *(([d], [], d) for d in drafts),
            *(([], [k], k) for k in deletions),
        ]
        for one_draft, one_deletion, item in items:
            try:
                outcome.merge(await self._isolated(at, one_draft, one_deletion))
            except Exception as exc:  # noqa: BLE001 - this item alone fails
                outcome.merge(Outcome(failures=[self._failure(exc, item)]))
        return outcome

    async def _isolated(self, at: BatchTarget, drafts: list[EventDraft], deletions: list[EventKey]) -> Outcome:
        """One pass in a savepoint, on copies of the drafts (a failed pass leaves them untouched)."""
        async with at.session.begin_nested():
            return await self._stages(at, [_clone(d) for d in drafts], deletions)

    def _failure(self, exc: BaseException, item: EventDraft | EventKey) -> ItemFailure:
        uid, rid = item.uid, (item.recurrence_id or "")
        if isinstance(exc, StageFailure):
            if exc.plugin != "kernel":
                metrics.PLUGIN_ERRORS.labels(plugin=exc.plugin).inc()
            return ItemFailure(exc.stage, exc.plugin, exc.name, uid, rid, exc.message)
        return ItemFailure("kernel", "kernel", "pipeline", uid, rid, _describe(exc))

    async def enrich(self, session: AsyncSession, events: list[CanonicalEvent]) -> None:
        """Every enricher in order over ``events`` (in place); a raising one is a ``StageFailure``."""
        for plugin, enricher in self.enrichers:
            try:
                await enricher.enrich(events, session, self.ctx)
            except Exception as exc:  # noqa: BLE001
                raise StageFailure("enrich", plugin, enricher.name, exc) from exc

    async def _stages(
        self, at: BatchTarget, drafts: list[EventDraft], deletions: list[EventKey], *, strict: bool = False
    ) -> Outcome:
        """One pass of every stage; ``strict`` stops before the enrichers when a draft is invalid."""
        session, store = at.session, at.store
        outcome = Outcome()
        if drafts:
            for plugin, normalizer in self.normalizers:
                try:
                    await normalizer.normalize(drafts, self.ctx)
                except Exception as exc:  # noqa: BLE001
                    raise StageFailure("normalize", plugin, normalizer.name, exc) from exc
        events: list[CanonicalEvent] = []
        for draft in drafts:
            try:
                events.append(CanonicalEvent.from_draft(draft))
            except (ValueError, TypeError) as exc:
                outcome.failures.append(
                    ItemFailure(
                        "validate",
                        "kernel",
                        "canonical_event",
                        draft.uid,
                        draft.recurrence_id or "",
                        _validation_message(exc),
                    )
                )
        if strict and outcome.failures:
            return outcome
        if events:
            await self.enrich(session, events)
        if not events and not deletions:
            return outcome
        try:
            result = await store.apply(session, events, deletions)
        except Exception as exc:  # noqa: BLE001
            raise StageFailure("store", "events", type(store).__name__, exc) from exc
        outcome.result = result
        if result.added or result.updated or result.deleted:
            batch = SinkBatch(
                source=at.source,
                calendar_id=at.calendar_id,
                added=list(result.added),
                updated=list(result.updated),
                previous=dict(result.previous),
                deleted=list(result.deleted),
                run_id=at.run_id,
                principal=at.principal,
            )
            for plugin, sink in self.sinks:
                try:
                    await sink.write(batch, session, self.ctx)
                except Exception as exc:  # noqa: BLE001
                    raise StageFailure("sink", plugin, sink.name, exc) from exc
        return outcome


def _validation_message(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = [f"{'.'.join(str(p) for p in e.get('loc', ())) or 'event'}: {e.get('msg')}" for e in errors()]
            return "; ".join(parts)[:1000]
        except Exception:  # noqa: BLE001 - fall back to the plain message
            pass
    return str(exc)[:1000]


class KernelEventIntake(EventIntake):
    """Ingest drafts for a local calendar through the pipeline's stages, synchronously."""

    def __init__(self, pipeline: SyncPipeline) -> None:
        self.pipeline = pipeline

    async def calendars(self) -> list[dict[str, Any]]:
        pipeline = self.pipeline
        async with pipeline.ctx.db.read() as s:
            states = {(r.source, r.calendar_id): r for r in (await s.execute(select(SyncState))).scalars()}
        out = []
        for key, ref in sorted(pipeline.calendars.items()):
            st = states.get(key)
            out.append(
                {
                    "source": key[0],
                    "calendar_id": key[1],
                    "name": str(ref.calendar.options.get("name") or key[1]),
                    "read_only": ref.calendar.read_only,
                    "interval_seconds": ref.calendar.interval_seconds,
                    "running": pipeline.is_running(*key),
                    "last_status": st.last_status if st else None,
                    "last_success_at": st.last_success_at if st else None,
                    "last_error_at": st.last_error_at if st else None,
                    "last_error": st.last_error if st else None,
                }
            )
        return out

    def deletes_at_source(self, source: str, calendar_id: str) -> bool:
        try:
            ref = self.pipeline.calendar(source, calendar_id)
        except LookupError:
            return False
        return not ref.calendar.read_only and ref.source.can_delete(ref.calendar)

    async def delete_at_source(self, source: str, calendar_id: str, uid: str, recurrence_id: str = "") -> None:
        try:
            ref = self.pipeline.calendar(source, calendar_id)
        except UnknownCalendar:
            raise LookupError(f"calendar {calendar_id!r} of source {source!r} is not configured") from None
        await ref.source.delete_entry(ref.calendar, uid, recurrence_id)

    async def ingest(
        self,
        source: str,
        calendar_id: str,
        drafts: list[EventDraft],
        *,
        actor: str | None = None,
        session: AsyncSession | None = None,
        principal: Principal | None = None,
    ) -> list[StoredEvent]:
        if session is None:
            async with self.pipeline.ctx.db.write() as s:
                return await self._ingest(s, source, calendar_id, drafts, actor, principal)
        return await self._ingest(session, source, calendar_id, drafts, actor, principal)

    async def _ingest(
        self,
        s: AsyncSession,
        source: str,
        calendar_id: str,
        drafts: list[EventDraft],
        actor: str | None,
        principal: Principal | None = None,
    ) -> list[StoredEvent]:
        from chronos.audit import record_audit

        pipeline = self.pipeline
        store = pipeline._store()
        for d in drafts:
            d.source, d.calendar_id = source, calendar_id
        try:
            at = BatchTarget(s, store, source, calendar_id, None, principal)
            outcome = await pipeline._stages(at, drafts, [], strict=True)
        except StageFailure as exc:
            # Bad input (an unknown time zone, an impossible date) is the client's
            # to fix: 422. Anything else is a fault of ours and propagates.
            if exc.stage != "normalize" and not isinstance(exc.exc, ValueError):
                raise
            raise _rejected(exc, "event", "/0") from None
        if outcome.failures:
            index = {id(d): i for i, d in enumerate(drafts)}
            by_key = {(d.uid, d.recurrence_id or ""): index[id(d)] for d in drafts}
            raise InvalidInput(
                "; ".join(f.message for f in outcome.failures)[:500],
                errors=[
                    {"pointer": f"/{by_key.get((f.uid, f.recurrence_id), 0)}", "detail": f.message}
                    for f in outcome.failures
                ],
            )
        stored: list[StoredEvent] = []
        for item, action in [(e, "create") for e in outcome.result.added] + [
            (e, "update") for e in outcome.result.updated
        ]:
            # A sink may have consumed the event (an ACTION: entry became a command).
            current = await store.get(s, item.id)
            if current is None:
                continue
            stored.append(current)
            if actor is not None:
                await record_audit(
                    s,
                    entity="event",
                    entity_id=current.id,
                    action=action,
                    actor=actor,
                    change={
                        "source": source,
                        "calendar_id": calendar_id,
                        "uid": current.event.uid,
                        "title": current.event.title,
                    },
                )
        return stored

    async def rederive(self, session: AsyncSession, previous: CanonicalEvent, edited: CanonicalEvent) -> CanonicalEvent:
        """See :meth:`EventIntake.rederive`: two enricher passes, one over the old text
        (to tell derived tags and checkboxes from the rest) and one over the new."""
        pipeline = self.pipeline
        if not pipeline.enrichers:
            return edited
        before = previous.model_copy(deep=True, update={"tags": [], "sub_tasks": []})
        try:
            await pipeline.enrich(session, [before])
            implied = set(before.tags)
            after = edited.model_copy(
                deep=True, update={"tags": [t for t in edited.tags if t not in implied], "sub_tasks": []}
            )
            await pipeline.enrich(session, [after])
        except StageFailure as exc:
            if not isinstance(exc.exc, ValueError):
                raise
            raise _rejected(exc, "change", "") from None
        if after.sub_tasks or before.sub_tasks:
            old_box = {t.id: t.done for t in before.sub_tasks}
            current = {t.id: t.done for t in edited.sub_tasks}
            for task in after.sub_tasks:
                # The same item with the same box as before: keep its flag (it may
                # have been ticked through the API without touching the text).
                if task.id in current and old_box.get(task.id) == task.done:
                    task.done = current[task.id]
        else:
            after.sub_tasks = [t.model_copy() for t in edited.sub_tasks]
        return after


def _rejected(exc: StageFailure, what: str, pointer: str) -> InvalidInput:
    """The refusal for input a stage refused (the client's to fix)."""
    return InvalidInput(
        f"The {what} was rejected by {exc.plugin}/{exc.name}: {exc.message}",
        errors=[{"pointer": pointer, "detail": exc.message, "stage": exc.stage}],
    )
