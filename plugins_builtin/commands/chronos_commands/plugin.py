"""The plugin module named by the entry point: hook implementations only."""

from __future__ import annotations

from chronos.plugin import (
    HealthCheck,
    HealthResult,
    Job,
    JobContext,
    JsonSchema,
    Migrations,
    PluginContext,
    Router,
    Scope,
    SettingsSection,
    hookimpl,
)

from chronos_commands import command_router, notes_links_router, whitelist_router, workflow_router
from chronos_commands.command_router import CommandOut
from chronos_commands.consume import CommandEntries, CommandHints, calendar_upkeep
from chronos_commands.outbox_events import EVENT_TYPES
from chronos_commands.settings import CommandsSettings
from chronos_commands.state import QUEUE, queue_of
from chronos_commands.whitelist_service import seed_from_config

NAME = "commands"


@hookimpl
def register_settings():
    return [SettingsSection(NAME, CommandsSettings)]


@hookimpl
def register_routers():
    # Path matching follows this order; the features' paths do not overlap.
    return [
        Router(NAME, command_router.router),
        Router(f"{NAME}-whitelists", whitelist_router.router),
        Router(f"{NAME}-workflows", workflow_router.router),
        Router(f"{NAME}-notes-links", notes_links_router.router),
    ]


@hookimpl
def register_migrations():
    return [Migrations(NAME, "chronos_commands")]


@hookimpl
def register_schemas():
    return [JsonSchema("command", CommandOut), *EVENT_TYPES]


@hookimpl
def register_resources():
    return [QUEUE]


@hookimpl
def register_scopes():
    return [Scope("commands.manage", "Poll, acknowledge and enqueue commands for any system")]


async def _recover(job: JobContext) -> dict[str, int]:
    return {"recovered": await queue_of(job.ctx).recover_all()}


async def _calendar(job: JobContext) -> dict[str, int]:
    return await calendar_upkeep(queue_of(job.ctx))


@hookimpl
def register_jobs(ctx: PluginContext):
    settings: CommandsSettings = ctx.section(CommandsSettings)
    interval = settings.recover_interval_seconds
    upkeep = settings.calendar.upkeep_interval_seconds
    return [
        Job(
            "commands.recover",
            _recover,
            interval_seconds=interval,
            jitter_seconds=min(5.0, interval / 5),
            description="Return commands whose lease expired to the queue (or mark them dead).",
        ),
        Job(
            "commands.calendar",
            _calendar,
            interval_seconds=upkeep,
            jitter_seconds=min(5.0, upkeep / 5),
            description="Consume entries of handed-out scheduled commands; delete consumed entries at their sources.",
        ),
    ]


@hookimpl
def register_enrichers(ctx: PluginContext):
    return [CommandHints(queue_of(ctx))]


@hookimpl
def register_sinks(ctx: PluginContext):
    return [CommandEntries(queue_of(ctx))]


async def _queue_health(ctx: PluginContext) -> HealthResult:
    counts = await queue_of(ctx).counts()
    return HealthResult(
        "ok",
        {"pending": counts.get("pending", 0), "processing": counts.get("processing", 0), "dead": counts.get("dead", 0)},
    )


@hookimpl
def register_health_checks():
    return [HealthCheck("commands.queue", _queue_health)]


@hookimpl
async def on_startup(ctx: PluginContext) -> None:
    await seed_from_config(queue_of(ctx), ctx.section(CommandsSettings))
