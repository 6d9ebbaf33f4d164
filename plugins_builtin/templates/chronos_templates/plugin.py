"""The ``templates`` plugin: hook implementations only."""

from __future__ import annotations

from chronos.plugin import (
    Migrations,
    PluginContext,
    Router,
    Scope,
    Service,
    SettingsSection,
    TemplateRenderer,
    hookimpl,
)

from chronos_templates.router import router
from chronos_templates.service import SERVICE, StoredTemplateRenderer, get_service
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
def register_scopes():
    # The test send is guarded by the mail plugin's scope, declared here too so
    # the route mounts when the mail plugin is disabled (it then answers 503).
    return [Scope("templates.manage", "Create, change and delete templates"), Scope("mail.send", "Send mail")]


@hookimpl
def register_resources():
    return [SERVICE]


@hookimpl
def register_services():
    return [Service("templates.renderer", TemplateRenderer, StoredTemplateRenderer)]


@hookimpl
async def on_startup(ctx: PluginContext) -> None:
    # The sandbox is built before on_startup; its self-check refuses an incompatible Jinja2.
    get_service(ctx)
