"""The ``backups`` plugin: hook implementations only."""

from __future__ import annotations

from chronos.plugin import CliCommand, Job, PluginContext, Router, Scope, SettingsSection, hookimpl

from chronos_backups.cli import backup_app, restore_command
from chronos_backups.router import router
from chronos_backups.service import BACKUP_JOB, STORE, backup_job
from chronos_backups.settings import BackupsSettings


@hookimpl
def register_settings():
    return [SettingsSection("backups", BackupsSettings, env_only=("passphrase",))]


@hookimpl
def register_scopes():
    return [Scope("backups.manage", "Create, list, download, verify and delete backups")]


@hookimpl
def register_routers():
    return [Router("backups", router)]


@hookimpl
def register_resources():
    return [STORE]


@hookimpl
def register_jobs(ctx: PluginContext):
    settings = ctx.section(BackupsSettings)
    return [Job(BACKUP_JOB, backup_job, cron=settings.schedule, description="Back up the database, then prune")]


@hookimpl
def register_cli(ctx: PluginContext):
    return [
        CliCommand("backup", backup_app(ctx), help="Back up now, list, verify and prune backups."),
        CliCommand("restore", command=restore_command(ctx), help="Restore a backup (the service must be stopped)."),
    ]
