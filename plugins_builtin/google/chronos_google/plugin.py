"""Hook implementations: the ``google`` settings, source and CLI."""

from __future__ import annotations

from chronos.plugin import CliCommand, SettingsSection, hookimpl

from chronos_google.cli import make_app
from chronos_google.settings import GoogleSettings
from chronos_google.source import GoogleSource


@hookimpl
def register_settings():
    return [SettingsSection("google", GoogleSettings)]


@hookimpl
def register_sources(ctx):
    return [GoogleSource(ctx.section(GoogleSettings), ctx)]


@hookimpl
def register_cli(ctx):
    return [CliCommand("google", make_app(lambda: ctx.section(GoogleSettings)), help="Connect Google calendars.")]
