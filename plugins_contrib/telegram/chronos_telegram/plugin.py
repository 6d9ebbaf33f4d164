"""Hook implementations: the ``telegram`` settings and delivery target."""

from __future__ import annotations

from chronos.plugin import PluginContext, SettingsSection, hookimpl

from chronos_telegram.settings import TelegramSettings
from chronos_telegram.target import API_BASE, TelegramTarget


class TelegramPlugin:
    """The plugin object. ``api_base`` points it at another Bot API server: tests use a local fake."""

    def __init__(self, api_base: str = API_BASE) -> None:
        self.api_base = api_base

    @hookimpl
    def register_settings(self):
        # The token comes from the environment or a file, never the YAML file (it ends up in backups).
        return [SettingsSection("telegram", TelegramSettings, env_only=("bot_token",))]

    @hookimpl
    def register_delivery_targets(self, ctx: PluginContext):
        settings = ctx.section(TelegramSettings)
        if settings.chat_id is None or (settings.bot_token is None and settings.bot_token_file is None):
            # Not configured: no target, so the outbox fans nothing out to this channel.
            return []
        return [TelegramTarget(ctx, settings, api_base=self.api_base)]


plugin = TelegramPlugin()
