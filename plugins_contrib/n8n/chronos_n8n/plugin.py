"""Hook implementations: the ``n8n`` settings and delivery target."""

from __future__ import annotations

from chronos.plugin import SettingsSection, hookimpl

from chronos_n8n.settings import N8nSettings
from chronos_n8n.target import N8nTarget


@hookimpl
def register_settings():
    # The signing secret and the header value are credentials: environment or file, never the YAML file.
    return [SettingsSection("n8n", N8nSettings, env_only=("signing_secret", "auth_header_value"))]


@hookimpl
def register_delivery_targets(ctx):
    settings = ctx.section(N8nSettings)
    if not settings.url:
        # Not configured: no target, so the outbox fans nothing out to this channel.
        return []
    return [N8nTarget(ctx, settings)]
