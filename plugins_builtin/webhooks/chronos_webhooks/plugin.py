"""The ``webhooks`` plugin: hook implementations only."""

from __future__ import annotations

from chronos.plugin import (
    CliCommand,
    EventType,
    HealthCheck,
    Job,
    Migrations,
    Outbox,
    PluginContext,
    Router,
    Scope,
    Service,
    SettingsSection,
    SignedRequests,
    hookimpl,
)

from chronos_webhooks.cli import outbox_app
from chronos_webhooks.dispatcher import DISPATCHER
from chronos_webhooks.inbound import InboundClients
from chronos_webhooks.outbox import DISPATCH_JOB, DISPATCH_REQUESTS, SqlOutbox
from chronos_webhooks.router import router
from chronos_webhooks.schemas import EventChange, OutboxTest, SyncFailed
from chronos_webhooks.service import outbox_health
from chronos_webhooks.settings import WebhooksSettings
from chronos_webhooks.sink import ENDPOINT_FILTERS, OutboxSink


@hookimpl
def register_settings():
    return [SettingsSection("webhooks", WebhooksSettings)]


@hookimpl
def register_routers():
    return [Router("webhooks", router)]


@hookimpl
def register_migrations():
    return [Migrations("webhooks", "chronos_webhooks")]


@hookimpl
def register_scopes():
    return [Scope("webhooks.manage", "Manage webhook endpoints, read deliveries, replay dead letters")]


@hookimpl
def register_resources():
    return [DISPATCH_REQUESTS, DISPATCHER, ENDPOINT_FILTERS]


@hookimpl
def register_services():
    return [
        Service("webhooks.outbox", Outbox, SqlOutbox),
        Service("webhooks.inbound", SignedRequests, InboundClients),
    ]


@hookimpl
def register_sinks():
    return [OutboxSink()]


@hookimpl
def register_schemas():
    return [
        EventType("outbox.test", OutboxTest, "A test message sent by POST /api/v1/webhooks/{id}/test"),
        EventType("event.created", EventChange, "An event was stored for the first time (sync or API)"),
        EventType("event.updated", EventChange, "A stored event changed"),
        EventType("event.deleted", EventChange, "A stored event was deleted"),
        # The kernel's sync pipeline publishes it (it is no plugin): declared here, with the outbox.
        EventType("sync.failed", SyncFailed, "A sync run of a calendar ended in an error"),
    ]


@hookimpl
def register_jobs(ctx: PluginContext):
    settings: WebhooksSettings = ctx.section(WebhooksSettings)

    async def dispatch(job):
        return await job.ctx.resource(DISPATCHER).run(job)

    interval = settings.poll_interval_seconds
    # Publishing starts the job at once (after the publisher's commit); the
    # schedule picks up retries that come due and work left by other workers.
    return [
        Job(
            DISPATCH_JOB,
            dispatch,
            interval_seconds=interval,
            jitter_seconds=min(1.0, interval / 10),
            run_at_start=True,
            description="Fan out published messages and deliver due webhooks and target deliveries",
        )
    ]


@hookimpl
def register_cli(ctx: PluginContext):
    return [CliCommand("outbox", outbox_app(ctx), help="Outbox deliveries: list, replay dead letters, purge-dead.")]


@hookimpl
def register_health_checks():
    return [HealthCheck("outbox", outbox_health)]
