"""Hook implementations: the ``ics`` settings and source."""

from __future__ import annotations

from chronos.plugin import OutboundPolicy, SettingsSection, hookimpl

from chronos_ics.settings import IcsSettings
from chronos_ics.source import IcsSource


@hookimpl
def register_settings():
    return [SettingsSection("ics", IcsSettings)]


@hookimpl
def register_sources(ctx):
    # The kernel closes the source (its parser processes) when the app stops.
    return [IcsSource(ctx.section(IcsSettings), outbound=OutboundPolicy.from_settings(ctx.settings))]
