"""The ``mail`` plugin: hook implementations only."""

from __future__ import annotations

from chronos.plugin import (
    HealthCheck,
    Job,
    MailQueue,
    Migrations,
    PluginContext,
    Router,
    Scope,
    Service,
    SettingsSection,
    hookimpl,
)

from chronos_mail.outbox_events import EVENT_TYPES
from chronos_mail.queue import SEND_JOB, SEND_REQUESTS, SqlMailQueue, queue_health
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
    return [
        Job(
            SEND_JOB,
            send,
            interval_seconds=interval,
            jitter_seconds=min(5.0, interval / 10),
            run_at_start=True,
            description="Send queued mail and due retries",
        )
    ]


@hookimpl
def register_schemas():
    return EVENT_TYPES


@hookimpl
def register_health_checks():
    return [HealthCheck("mail.queue", queue_health)]
