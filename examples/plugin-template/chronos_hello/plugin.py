"""The plugin module named by the entry point: hook implementations only."""

from __future__ import annotations

from typing import Any

from chronos.plugin import Migrations, Router, Scope, SettingsSection, WebAssets, hookimpl

from chronos_hello.router import router
from chronos_hello.service import GREETER
from chronos_hello.settings import HelloSettings


@hookimpl
def register_settings() -> list[SettingsSection]:
    return [SettingsSection("hello", HelloSettings)]


@hookimpl
def register_scopes() -> list[Scope]:
    return [Scope("hello.write", "Greet people"), Scope("hello.read", "Read recorded greetings")]


@hookimpl
def register_resources() -> list[Any]:
    return [GREETER]


@hookimpl
def register_routers() -> list[Router]:
    return [Router("hello", router)]


@hookimpl
def register_migrations() -> list[Migrations]:
    # Revisions in chronos_hello/migrations/versions/, version table alembic_version_hello.
    return [Migrations("hello", "chronos_hello")]


@hookimpl
def register_web_assets() -> list[WebAssets]:
    # chronos_hello/static/panel.js becomes a panel of the dashboard (the web plugin).
    return [WebAssets("hello", "chronos_hello", "static")]
