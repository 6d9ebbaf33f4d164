"""The ``templates`` plugin: hook implementations only."""

from __future__ import annotations

from chronos.plugin import (
    Migrations,
    PluginContext,
    Router,
    Service,
    SettingsSection,
    TemplateRenderer,
    hookimpl,
)

from chronos_templates.router import router
from chronos_templates.service import STATE_KEY, StoredTemplateRenderer, get_service
from chronos_templates.settings import TemplatesSettings


@hookimpl
def register_settings():
    return [SettingsSection("templates", TemplatesSettings)]


@hookimpl
def register_routers():
    return [Router("templates", router)]


@hookimpl
def register_migrations():
    return [Migrations("templates", "chronos_templates")]


@hookimpl
def register_services():
    return [Service("templates.renderer", TemplateRenderer, StoredTemplateRenderer)]


@hookimpl
async def on_startup(ctx: PluginContext) -> None:
    # Build the sandbox now: its self-check refuses an incompatible Jinja2 at startup.
    get_service(ctx)


@hookimpl
async def on_shutdown(ctx: PluginContext) -> None:
    svc = ctx.state.pop(STATE_KEY, None)
    if svc is not None:
        svc.close()
