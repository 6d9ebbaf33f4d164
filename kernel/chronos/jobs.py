"""The job runner: the kernel's one place for background work.

APScheduler 3 fires interval and cron schedules (with jitter, coalescing and
misfire handling); this module adds what it lacks for us: no overlapping runs
of one job (scheduled or manual), on-demand runs, a heartbeat row per runner,
a record of every run, graceful shutdown, and leadership so that exactly one
process runs the schedules: ``pg_try_advisory_lock`` on a dedicated connection
on PostgreSQL (released by the server when the leader dies, so a follower takes
over), an exclusive ``flock`` beside the database file on SQLite.

The heartbeat row says who leads: a runner writes it at once when it wins or
loses leadership, and :func:`current_leader` trusts an ``is_leader`` row only
while it is about one heartbeat old (and, on PostgreSQL, only while the lock
is held), so a dead leader stops being named within one heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import random
import socket
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Table, func, select, text, update
from sqlalchemy.engine import make_url

from chronos.context import PluginContext
from chronos.db.base import utcnow
from chronos.db.models import JobHeartbeat, JobRun
from chronos.records import Job, JobContext, JobTrigger

log = structlog.get_logger("chronos.jobs")
PG_LEADER_LOCK = 7_458_142_003
#: How late a leader's heartbeat may be, beyond one (jittered) interval, before it is no longer named.
LEADER_SLACK_SECONDS = 1.0


class JobBusy(Exception):
    """The job is already running."""


def leader_lock_key(schema: str | None) -> int:
    """The advisory lock key of the scheduler leader on PostgreSQL. Schemas are separate
    deployments sharing one server, so each schema has its own leader."""
    if not schema:
        return PG_LEADER_LOCK
    raw = f"chronos.leader\0{schema}".encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big", signed=True)


def job_lock_key(schema: str | None, job: str) -> int:
    """The transaction-level advisory lock key that orders the start of one job across processes."""
    raw = f"chronos.job\0{schema or ''}\0{job}".encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big", signed=True)


def leader_window_seconds(heartbeat_seconds: float) -> float:
    """How old the leader's heartbeat may be while it is still named the leader: one
    interval with its jitter (up to +10 %) plus a little time to write the row."""
    return heartbeat_seconds * 1.1 + LEADER_SLACK_SECONDS


async def _leader_lock_held(session: Any, schema: str | None) -> bool:
    key = leader_lock_key(schema)
    held = await session.execute(
        text(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND classid = :hi AND objid = :lo"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
    )
    return held.first() is not None


async def current_leader(session: Any, db: Any, *, heartbeat_seconds: float) -> str | None:
    """The runner id of the scheduler leader, or None while there is none (a dead leader is no
    longer named once its heartbeat is one interval late; on PostgreSQL, as soon as its
    connection, and with it the advisory lock, is gone)."""

    since = utcnow() - timedelta(seconds=leader_window_seconds(heartbeat_seconds))
    row = (
        await session.execute(
            select(JobHeartbeat.runner_id)
            .where(JobHeartbeat.is_leader.is_(True), JobHeartbeat.beat_at >= since)
            .order_by(JobHeartbeat.beat_at.desc())
            .limit(1)
        )
    ).scalar()
    if row is None:
        return None
    if not db.is_sqlite and not await _leader_lock_held(session, db.schema):
        return None
    return cast(str, row)


async def live_runners(session: Any, *, within_seconds: float) -> list[dict[str, Any]]:
    """The job runners (``chronos serve`` and ``chronos worker`` processes) whose heartbeat
    is younger than ``within_seconds``: who is using the database right now."""

    since = utcnow() - timedelta(seconds=within_seconds)
    rows = (await session.execute(select(JobHeartbeat).where(JobHeartbeat.beat_at >= since))).scalars().all()
    return [{"runner_id": r.runner_id, "host": r.host, "is_leader": r.is_leader, "beat_at": r.beat_at} for r in rows]


def make_trigger(job: Job) -> Any:
    if job.cron:
        trigger = CronTrigger.from_crontab(job.cron, timezone="UTC")
        trigger.jitter = job.jitter_seconds or None  # from_crontab takes no jitter argument
        return trigger
    if job.interval_seconds:
        return IntervalTrigger(seconds=job.interval_seconds, jitter=job.jitter_seconds or None, timezone="UTC")
    return None


class JobRunner:
    def __init__(self, ctx: PluginContext, jobs: list[tuple[str, Job]]) -> None:
        self.ctx = ctx
        self.jobs: dict[str, tuple[str, Job]] = {}
        for plugin, job in jobs:
            make_trigger(job)  # invalid cron expressions fail at startup
            self.jobs[job.name] = (plugin, job)
        self.settings = ctx.settings.kernel.scheduler
        self.runner_id = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.is_leader = False
        self.running: dict[str, asyncio.Task[Any]] = {}
        self.last_beat: float | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._leader_conn: Any = None
        self._lock_file: Any = None
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._beat_now = asyncio.Event()  # leadership changed: write the heartbeat row at once

    # -- running jobs -------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` has begun: start no new work."""
        return self._stopping

    def run_now(
        self, name: str, args: dict[str, Any] | None = None, *, trigger: JobTrigger = "manual"
    ) -> asyncio.Task[Any]:
        """Start ``name`` now; raises :class:`JobBusy` if a run is in progress."""
        if name not in self.jobs:
            raise KeyError(f"unknown job {name!r}")
        task = self.running.get(name)
        if task is not None and not task.done():
            raise JobBusy(f"job {name!r} is already running")
        task = asyncio.create_task(self._run(name, trigger, args or {}), name=f"job:{name}")
        self.running[name] = task
        return task

    async def _scheduled(self, name: str) -> None:
        # Start the run and return: overlap is prevented by run_now, and the
        # scheduler's own instance never outlives this call (no CancelledError
        # noise from APScheduler at shutdown).
        try:
            self.run_now(name, trigger="schedule")
        except JobBusy:
            log.info("job_skipped_busy", job=name)

    async def running_elsewhere(self, session: Any, name: str) -> str | None:
        """The id of another live runner executing ``name`` now, or None (``POST /jobs/{name}/run``
        asks before starting a run on this replica).

        Live: its heartbeat is at most one interval late, as for naming the leader, so a killed
        runner's row stops counting within seconds. Scheduled runs do not ask: only the leader
        schedules, and a leader's runs die with it. On PostgreSQL a transaction-level advisory
        lock per job puts two replicas asking in the same instant in order."""
        if not self.ctx.db.is_sqlite:
            key = job_lock_key(self.ctx.db.schema, name)
            await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        since = utcnow() - timedelta(seconds=leader_window_seconds(self.settings.heartbeat_seconds))
        live = select(JobHeartbeat.runner_id).where(JobHeartbeat.beat_at >= since)
        other = await session.execute(
            select(JobRun.runner_id)
            .where(
                JobRun.job == name,
                JobRun.status == "running",
                JobRun.runner_id != self.runner_id,
                JobRun.runner_id.in_(live),
            )
            .limit(1)
        )
        return cast("str | None", other.scalar())

    async def _run(self, name: str, trigger: JobTrigger, args: dict[str, Any]) -> Any:
        plugin, job = self.jobs[name]
        run_id = None
        try:
            async with self.ctx.db.write() as s:
                row = JobRun(job=name, trigger=trigger, status="running", started_at=utcnow(), runner_id=self.runner_id)
                s.add(row)
                await s.flush()
                run_id = row.id
        except Exception as exc:  # noqa: BLE001 - bookkeeping must not block the job
            log.warning("job_run_record_failed", job=name, error=str(exc))
        status, error, result = "ok", None, None
        try:
            result = await job.func(JobContext(self.ctx, job, trigger, args))
        except asyncio.CancelledError:
            status, error = "cancelled", "cancelled at shutdown"
            raise
        except Exception as exc:  # noqa: BLE001 - a failing job is recorded, never fatal
            status, error = "error", f"{type(exc).__name__}: {exc}"
            log.error("job_failed", job=name, plugin=plugin, error=error, exc_info=exc)
        finally:
            from chronos import metrics

            metrics.JOB_RUNS.labels(job=name, status=status).inc()
            if run_id is not None:
                with contextlib.suppress(Exception):
                    async with self.ctx.db.write() as s:
                        await s.execute(
                            update(JobRun)
                            .where(JobRun.id == run_id)
                            .values(status=status, error=error, finished_at=utcnow())
                        )
        return result

    # -- lifecycle ----------------------------------------------------------------

    async def start(self, schedules: bool = True) -> None:
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="jobs:heartbeat"))
        if schedules:
            self._tasks.append(asyncio.create_task(self._leadership_loop(), name="jobs:leader"))

    async def _become_leader(self) -> bool:
        db = self.ctx.db
        if db.is_sqlite:
            path = make_url(db.url).database or "chronos.db"
            lock_path = Path(path + ".leader")
            fh = open(lock_path, "a+")  # noqa: SIM115 - held for the process's lifetime
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                return False
            self._lock_file = fh
            return True
        conn = await db.reader.connect()
        try:
            key = leader_lock_key(db.schema)
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
            await conn.commit()
        except Exception:
            await conn.close()
            raise
        if got:
            self._leader_conn = conn
            return True
        await conn.close()
        return False

    async def _leadership_loop(self) -> None:
        while not self._stopping:
            try:
                if not self.is_leader and await self._become_leader():
                    if self._stopping:  # won while stop() was running: never start a scheduler now
                        await self._release_leader_conn()
                        break
                    self.is_leader = True
                    self._beat_now.set()
                    log.info("job_leader", runner=self.runner_id)
                    self._start_scheduler()
                elif self.is_leader and self._leader_conn is not None:
                    # Losing the connection loses the lock: step down and retry.
                    await self._leader_conn.execute(text("SELECT 1"))
                    await self._leader_conn.commit()  # never sit idle in a transaction
            except Exception as exc:  # noqa: BLE001
                log.warning("job_leadership_check_failed", error=str(exc))
                if self.is_leader:
                    await self._release_leader_conn()
                    self._step_down()
            await self._pause(self.settings.leader_retry_seconds)

    def _start_scheduler(self) -> None:
        sched = AsyncIOScheduler(timezone="UTC")
        for name, (_plugin, job) in self.jobs.items():
            trig = make_trigger(job)
            if trig is not None:
                sched.add_job(
                    self._scheduled, trig, args=[name], id=name, max_instances=1, coalesce=True, misfire_grace_time=300
                )
        sched.start()
        self._scheduler = sched
        for name, (_plugin, job) in self.jobs.items():
            if job.run_at_start:
                with contextlib.suppress(JobBusy):
                    self.run_now(name, trigger="schedule")

    async def _release_leader_conn(self) -> None:
        """End the leader's database session: the advisory lock is session-level and
        would otherwise survive in the connection pool after we stop leading."""
        conn, self._leader_conn = self._leader_conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.invalidate()
        with contextlib.suppress(Exception):
            await conn.close()

    def _step_down(self) -> None:
        self.is_leader = False
        self._beat_now.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        self._leader_conn = None

    async def _heartbeat_loop(self) -> None:
        host = socket.gethostname()[:255]
        started = utcnow()
        while not self._stopping:
            try:
                now = utcnow()
                async with self.ctx.db.write() as s:
                    row = (
                        await s.execute(select(JobHeartbeat).where(JobHeartbeat.runner_id == self.runner_id))
                    ).scalar()
                    if row is None:
                        s.add(
                            JobHeartbeat(
                                runner_id=self.runner_id,
                                host=host,
                                is_leader=self.is_leader,
                                started_at=started,
                                beat_at=now,
                            )
                        )
                    else:
                        row.beat_at, row.is_leader = now, self.is_leader
                    if self.is_leader:
                        await self._close_abandoned_runs(s, now)
                self.last_beat = now.timestamp()
            except Exception as exc:  # noqa: BLE001
                log.warning("job_heartbeat_failed", error=str(exc))
            interval = self.settings.heartbeat_seconds
            await self._pause(interval * (0.9 + 0.2 * random.random()), wake=self._beat_now)
            self._beat_now.clear()

    async def _close_abandoned_runs(self, session: Any, now: Any) -> None:
        """Mark interrupted the runs whose runner stopped beating (killed, crashed, its host gone):
        they would otherwise show "running" forever and hide the job's real last run."""
        since = now - timedelta(seconds=self.settings.heartbeat_stale_seconds)
        live = select(JobHeartbeat.runner_id).where(JobHeartbeat.beat_at >= since)
        await session.execute(
            update(JobRun)
            .where(
                JobRun.status == "running",
                JobRun.runner_id.is_not(None),
                JobRun.runner_id.not_in(live),
                JobRun.started_at < since,
            )
            .values(
                status="interrupted",
                # The runner's last heartbeat: the last moment it was seen alive.
                finished_at=func.coalesce(
                    select(JobHeartbeat.beat_at).where(JobHeartbeat.runner_id == JobRun.runner_id).scalar_subquery(),
                    now,
                ),
                error=(
                    "the process running it stopped without finishing"
                    f" (no heartbeat for {self.settings.heartbeat_stale_seconds:g} s); the next run starts over"
                ),
            )
        )

    async def _pause(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Sleep between loop turns; returns at once when the runner stops (or ``wake`` is set)."""
        events = [self._stop_event] + ([wake] if wake is not None else [])
        waiters = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        # The loops finish their turn (a heartbeat write is never cut in half);
        # only one that hangs is cancelled.
        if self._tasks:
            _done, hung = await asyncio.wait(self._tasks, timeout=5)
            for t in hung:
                t.cancel()
        if self._scheduler is not None:  # started by a turn that was already under way
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        running = [t for t in self.running.values() if not t.done()]
        if running:
            _done, pending = await asyncio.wait(running, timeout=self.settings.shutdown_timeout_seconds)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._release_leader_conn()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        with contextlib.suppress(Exception):
            async with self.ctx.db.write() as s:
                heartbeats = cast(Table, JobHeartbeat.__table__)
                await s.execute(heartbeats.delete().where(JobHeartbeat.runner_id == self.runner_id))
        self.is_leader = False
