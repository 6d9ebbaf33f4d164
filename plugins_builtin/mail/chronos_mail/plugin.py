"""The ``mail`` plugin: hook implementations only."""

from __future__ import annotations

from sqlalchemy import func, select

from chronos.plugin import (
    HealthCheck,
    HealthResult,
    Job,
    MailQueue,
    Migrations,
    PluginContext,
    Router,
    Scope,
    Service,
    SettingsSection,
    hookimpl,
    utcnow,
)

from chronos_mail.models import MailDelivery
from chronos_mail.queue import SEND_JOB, SEND_REQUESTS, SqlMailQueue
from chronos_mail.router import router
from chronos_mail.sender import SENDER
from chronos_mail.settings import MailSettings


@hookimpl
def register_settings():
    # The password may come from the environment or a password file, never
    # from the YAML file (which ends up in backups and repositories).
    return [SettingsSection("mail", MailSettings, env_only=("smtp.password",))]


@hookimpl
def register_routers():
    return [Router("mail", router)]


@hookimpl
def register_migrations():
    return [Migrations("mail", "chronos_mail")]


@hookimpl
def register_scopes():
    return [Scope("mail.send", "Send mail")]


@hookimpl
def register_resources():
    return [SEND_REQUESTS, SENDER]


@hookimpl
def register_services():
    return [Service("mail.queue", MailQueue, SqlMailQueue)]


@hookimpl
def register_jobs(ctx: PluginContext):
    settings: MailSettings = ctx.section(MailSettings)

    async def send(job):
        return await job.ctx.resource(SENDER).run(job)

    interval = settings.poll_interval_seconds
    # POST /mail/send starts the job at once; the schedule is the safety net
    # for retries that come due and for anything queued while it was busy.
    return [Job(SEND_JOB, send, interval_seconds=interval, jitter_seconds=min(5.0, interval / 10), run_at_start=True,
                description="Send queued mail and due retries")]


async def _queue_health(ctx: PluginContext) -> HealthResult:
    settings: MailSettings = ctx.section(MailSettings)
    now = utcnow()
    async with ctx.db.read() as s:
        counts = dict((await s.execute(
            select(MailDelivery.status, func.count()).where(MailDelivery.status.in_(("queued", "retrying")))
            .group_by(MailDelivery.status)
        )).all())
        oldest = (await s.execute(
            select(func.min(MailDelivery.next_attempt_at)).where(MailDelivery.status.in_(("queued", "retrying")))
        )).scalar()
    detail = {"queued": counts.get("queued", 0), "retrying": counts.get("retrying", 0),
              "configured": bool(settings.from_)}
    if oldest is not None:
        if oldest.tzinfo is None:  # SQLite's MIN() bypasses the column type
            from datetime import UTC

            oldest = oldest.replace(tzinfo=UTC)
        overdue = (now - oldest).total_seconds()
        detail["oldest_due_seconds"] = round(max(0.0, overdue), 1)
        if overdue > max(600.0, settings.poll_interval_seconds * 10):
            return HealthResult("degraded", {**detail, "detail": "due mail is not being sent"})
    return HealthResult("ok", detail)


@hookimpl
def register_health_checks():
    return [HealthCheck("mail.queue", _queue_health)]
