"""Hook implementations: the ``slack`` settings and delivery target."""

from __future__ import annotations

from chronos.plugin import PluginContext, SettingsSection, hookimpl

from chronos_slack.settings import SlackSettings
from chronos_slack.target import API_BASE, SlackTarget


class SlackPlugin:
    """The plugin object. ``api_base`` points chat.postMessage at another Web API server: tests use a local fake."""

    def __init__(self, api_base: str = API_BASE) -> None:
        self.api_base = api_base

    @hookimpl
    def register_settings(self):
        # The webhook URL and the token are credentials: from the environment or a file, never the YAML file.
        return [SettingsSection("slack", SlackSettings, env_only=("webhook_url", "bot_token"))]

    @hookimpl
    def register_delivery_targets(self, ctx: PluginContext):
        settings = ctx.section(SlackSettings)
        if not settings.configured:
            # Not configured: no target, so the outbox fans nothing out to this channel.
            return []
        return [SlackTarget(ctx, settings, api_base=self.api_base)]


plugin = SlackPlugin()
