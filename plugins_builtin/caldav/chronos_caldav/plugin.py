"""Hook implementations: the ``caldav`` settings, source and tables."""

from __future__ import annotations

from chronos.plugin import Migrations, SettingsSection, hookimpl

from chronos_caldav.settings import CaldavSettings
from chronos_caldav.source import CaldavSource


@hookimpl
def register_settings():
    return [SettingsSection("caldav", CaldavSettings)]


@hookimpl
def register_migrations():
    return [Migrations("caldav", "chronos_caldav")]


@hookimpl
def register_sources(ctx):
    return [CaldavSource(ctx.section(CaldavSettings), ctx)]
