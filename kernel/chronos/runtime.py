"""The kernel, booted once: the one start-up and shut-down sequence.

``Runtime`` is what the app's lifespan, ``chronos worker``, ``chronos sync``
and the testing kit all run::

    settings -> plugin host -> load plugins -> migrate -> services -> resources
             -> pipeline -> job runner -> on_startup hooks        (start)
    pipeline runs drain -> job runner -> on_shutdown hooks
             -> resources closed (reverse) -> database disposed    (stop)
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Literal

import structlog

from chronos import __version__
from chronos.audit import write_checkpoint
from chronos.audit_key import ENV_VAR as AUDIT_KEY_ENV, audit_key_for
from chronos.context import PluginContext
from chronos.contracts.events import EventIntake
from chronos.db.migrate import migrate
from chronos.host import PluginError, PluginHost, PluginSpec
from chronos.jobs import JobRunner
from chronos.keys import KeyVerifier
from chronos.pipeline import KernelEventIntake, SyncPipeline
from chronos.records import Job, JobContext
from chronos.settings import ConfigError, Settings

log = structlog.get_logger("chronos.runtime")

#: How much of the job runner runs: ``schedules`` (heartbeat and, on the leader,
#: the schedules), ``on_demand`` (heartbeat; jobs run only when asked), ``off``
#: (nothing in the background: one-shot commands).
JobsMode = Literal["schedules", "on_demand", "off"]


class Runtime:
    """One booted kernel: its context, plugin host, pipeline and job runner.

    Building it loads the plugins (and raises ``ConfigError`` or
    ``PluginError`` at once); :meth:`start` and :meth:`stop` run the rest.
    """

    def __init__(
        self, settings: Settings, plugins: Iterable[PluginSpec] | None = None, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.ctx = PluginContext(settings)
        self.host = PluginHost(settings, plugins, env=env)
        self.host.load(self.ctx)
        self.ctx._scopes = MappingProxyType(self.host.scopes())
        self.ctx._declared = {rec for _, rec in self.host.resources()}
        self.ctx._delivery_targets = MappingProxyType({rec.name: rec for _, rec in self.host.delivery_targets()})
        self.ctx._event_types = MappingProxyType({rec.name: rec for _, rec in self.host.event_types()})
        self.ctx._migrations = tuple(self.host.migrations())
        self.ctx._web_assets = MappingProxyType({rec.name: rec for _, rec in self.host.web_assets()})
        self.keys = KeyVerifier(self.ctx)
        self._pipeline: SyncPipeline | None = None
        self._runner: JobRunner | None = None
        self._started = False

    @property
    def started(self) -> bool:
        return self._started and self._pipeline is not None

    @property
    def pipeline(self) -> SyncPipeline:
        if self._pipeline is None:
            raise RuntimeError("the runtime is not started")
        return self._pipeline

    @property
    def runner(self) -> JobRunner:
        if self._runner is None:
            raise RuntimeError("the runtime is not started")
        return self._runner

    async def migrate(self) -> dict[str, list[str]]:
        """Bring the kernel's and every enabled plugin's tables to head."""
        dbs = self.settings.kernel.database
        return await migrate(dbs.url, self.host.migrations(), schema=dbs.schema_name)

    async def start(self, *, jobs: JobsMode = "schedules", migrate: bool | None = None) -> None:
        """Migrate (unless ``database.migrate_on_start`` is off), build services,
        resources and the pipeline, start the job runner, run ``on_startup``."""
        if self._started:
            raise RuntimeError("the runtime is already started")
        self._started = True
        ctx = self.ctx
        if self.settings.kernel.database.migrate_on_start if migrate is None else migrate:
            await self.migrate()
        self._load_audit_key()
        for _plugin, svc in self.host.services():
            ctx._services[svc.interface] = svc.factory(ctx)
        for _plugin, res in self.host.resources():
            ctx.resource(res)
        self._pipeline = SyncPipeline(ctx, self.host)
        ctx._services.setdefault(EventIntake, KernelEventIntake(self._pipeline))
        self._runner = ctx.jobs = JobRunner(ctx, self._all_jobs(self._pipeline))
        await self.host.startup(ctx)
        if jobs != "off":
            await self._runner.start(schedules=jobs == "schedules")
        log.info("started", plugins=self.host.enabled(), jobs=jobs, version=__version__)

    async def stop(self) -> None:
        """The reverse of :meth:`start`; safe after a start that failed half-way."""
        if not self._started:
            return
        self._started = False
        try:
            if self._pipeline is not None:
                await self._pipeline.stop(self.settings.kernel.scheduler.shutdown_timeout_seconds)
            if self._runner is not None:
                await self._runner.stop()
                await self._checkpoint_audit()
            await self.host.shutdown(self.ctx)
            if self._pipeline is not None:
                await self._pipeline.close_sources()
            await self._close_resources()
        finally:
            await self.keys.aclose()
            if self.ctx.has_db:
                await self.ctx.db.dispose()

    @asynccontextmanager
    async def running(self, *, jobs: JobsMode = "schedules", migrate: bool | None = None) -> AsyncIterator[Runtime]:
        try:
            await self.start(jobs=jobs, migrate=migrate)
            yield self
        finally:
            await self.stop()

    async def _close_resources(self) -> None:
        declared = {rec: plugin for plugin, rec in self.host.resources()}
        for rec, obj in reversed(list(self.ctx._resources.items())):
            try:
                if rec.close is not None:
                    result = rec.close(obj)
                    if inspect.isawaitable(result):
                        await result
            except Exception as exc:  # noqa: BLE001 - the others still close
                log.error(
                    "resource_close_failed",
                    plugin=declared.get(rec),
                    resource=rec.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
        self.ctx._resources.clear()

    def _load_audit_key(self) -> None:
        """Read (or create) the audit key now, so its location is logged at start."""
        try:
            engine = self.ctx.db.writer.sync_engine
        except Exception:  # noqa: BLE001 - an unusable database is reported by /health, not here
            return
        try:
            audit_key_for(engine)
        except ConfigError as exc:
            if os.environ.get(AUDIT_KEY_ENV):
                raise
            # Audited writes fail until it is readable; the rest of the service can still answer.
            log.error("audit_key_unavailable", error="; ".join(exc.problems))

    async def _checkpoint_audit(self, _job: JobContext | None = None) -> dict[str, int]:
        """Sign the audit chain's head (the ``audit.checkpoint`` job; also on shutdown)."""
        try:
            async with self.ctx.db.write() as s:
                checkpoint = await write_checkpoint(s)
        except Exception as exc:  # noqa: BLE001 - a missed checkpoint is logged; the next one covers it
            if _job is not None:
                raise
            log.error("audit_checkpoint_failed", error=f"{type(exc).__name__}: {exc}")
            return {}
        return {"last_id": checkpoint.last_id}

    def _all_jobs(self, pipeline: SyncPipeline) -> list[tuple[str, Job]]:
        """The plugins' jobs, the audit checkpoint and one sync job per calendar; a name clash stops startup."""
        jobs = self.host.jobs()
        jobs.append(
            (
                "kernel",
                Job(
                    "audit.checkpoint",
                    self._checkpoint_audit,
                    interval_seconds=self.settings.kernel.audit.checkpoint_seconds,
                    description="Sign the audit log's head, so deleting its newest rows is detected",
                ),
            )
        )
        names = {job.name: plugin for plugin, job in jobs}
        for _kernel, job in pipeline.jobs():
            if job.name in names:
                raise PluginError(f"job {job.name!r} of plugin {names[job.name]!r} clashes with the kernel's sync job")
            jobs.append(("kernel", job))
        return jobs
