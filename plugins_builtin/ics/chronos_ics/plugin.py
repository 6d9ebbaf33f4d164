"""Hook implementations: the ``ics`` settings and source."""

from __future__ import annotations

from chronos.plugin import SettingsSection, hookimpl

from chronos_ics.settings import IcsSettings
from chronos_ics.source import IcsSource

# The source of each running app (several apps may share a process in tests).
_STATE_KEY = "ics.source"


@hookimpl
def register_settings():
    return [SettingsSection("ics", IcsSettings)]


@hookimpl
def register_sources(ctx):
    source = IcsSource(ctx.section("ics"))
    ctx.state[_STATE_KEY] = source
    return [source]


@hookimpl
async def on_shutdown(ctx):
    source = ctx.state.pop(_STATE_KEY, None)
    if source is not None:
        source.close()
