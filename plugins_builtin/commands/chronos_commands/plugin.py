"""The plugin module named by the entry point: hook implementations only."""

from __future__ import annotations

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from chronos.plugin import (
    Scope,
    HealthCheck,
    HealthResult,
    Job,
    JobContext,
    JsonSchema,
    Migrations,
    PluginContext,
    Router,
    SettingsSection,
    hookimpl,
    record_audit,
    utcnow,
)

from chronos_commands.consume import CommandEntries, CommandHints, calendar_upkeep
from chronos_commands.models import ExternalCommand, WhitelistEntry
from chronos_commands.router import CommandOut, router
from chronos_commands.settings import CommandsSettings
from chronos_commands.state import QUEUE, queue_of

NAME = "commands"
WL = WhitelistEntry.__table__
SEEDED_FIELDS = ("allowed_params_json", "enabled", "schedule", "max_attempts", "description")


@hookimpl
def register_settings():
    return [SettingsSection(NAME, CommandsSettings)]


@hookimpl
def register_routers():
    return [Router(NAME, router)]


@hookimpl
def register_migrations():
    return [Migrations(NAME, "chronos_commands")]


@hookimpl
def register_schemas():
    return [JsonSchema("command", CommandOut)]


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
        Job("commands.recover", _recover, interval_seconds=interval, jitter_seconds=min(5.0, interval / 5),
            description="Return commands whose lease expired to the queue (or mark them dead)."),
        Job("commands.calendar", _calendar, interval_seconds=upkeep, jitter_seconds=min(5.0, upkeep / 5),
            description="Consume entries of handed-out scheduled commands; delete consumed entries at their sources."),
    ]


@hookimpl
def register_enrichers(ctx: PluginContext):
    return [CommandHints(queue_of(ctx))]


@hookimpl
def register_sinks(ctx: PluginContext):
    return [CommandEntries(queue_of(ctx))]


async def _queue_health(ctx: PluginContext) -> HealthResult:
    T = ExternalCommand.__table__
    async with ctx.db.read() as s:
        rows = (await s.execute(select(T.c.status, func.count()).group_by(T.c.status))).all()
    counts = {status: n for status, n in rows}
    return HealthResult("ok", {"pending": counts.get("pending", 0), "processing": counts.get("processing", 0),
                               "dead": counts.get("dead", 0)})


@hookimpl
def register_health_checks():
    return [HealthCheck("commands.queue", _queue_health)]


async def seed_whitelist(ctx: PluginContext, settings: CommandsSettings) -> None:
    """Apply the ``commands.whitelist`` entries: insert missing ones, update changed ones.

    Pending commands of an entry whose params changed (or that is created anew) are re-checked
    against the new rules, as for a change through the API.
    """
    if not settings.whitelist:
        return
    queue = queue_of(ctx)
    async with ctx.db.write() as s:
        for seed in settings.whitelist:
            action = seed.action.upper()
            wanted = {"allowed_params_json": seed.params, "enabled": seed.enabled, "schedule": seed.schedule,
                      "max_attempts": seed.max_attempts, "description": seed.description}
            row = (await s.execute(select(WL).where(WL.c.system == seed.system, WL.c.action == action))).mappings().first()
            now = utcnow()
            if row is None:
                new = (await s.execute(insert(WL).values(system=seed.system, action=action, origin="config",
                                                         created_at=now, updated_at=now, **wanted)
                                       .returning(WL.c.id))).scalar_one()
                await record_audit(s, entity="whitelist", entity_id=new, action="create",
                                   change={"system": seed.system, "action": action, **wanted}, actor="system:config")
                await queue.recheck_pending(s, {"id": new, "system": seed.system, "action": action, **wanted},
                                            actor="system:config")
                continue
            diff = {k: {"from": row[k], "to": v} for k, v in wanted.items() if row[k] != v}
            if diff:
                await s.execute(update(WL).where(WL.c.id == row["id"]).values(updated_at=now, origin="config", **wanted))
                await record_audit(s, entity="whitelist", entity_id=row["id"], action="update", change=diff,
                                   actor="system:config")
                if "allowed_params_json" in diff:
                    await queue.recheck_pending(s, {**row, **wanted}, actor="system:config")


@hookimpl
async def on_startup(ctx: PluginContext) -> None:
    settings: CommandsSettings = ctx.section(CommandsSettings)
    queue_of(ctx)
    try:
        await seed_whitelist(ctx, settings)
    except IntegrityError:
        # Another replica seeded the same entries at the same moment; once more sees them.
        await seed_whitelist(ctx, settings)

