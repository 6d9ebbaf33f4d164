"""The ``events`` plugin: hook implementations only."""

from __future__ import annotations

from chronos.plugin import EventStore, Migrations, PluginContext, Router, Service, SettingsSection, hookimpl

from chronos_events import feeds, router, transfer
from chronos_events.search import ensure_sqlite_fts
from chronos_events.settings import EventsSettings
from chronos_events.source import LocalSource
from chronos_events.state import INLINE_READER
from chronos_events.store import SqlEventStore


@hookimpl
def register_settings():
    return [SettingsSection("events", EventsSettings)]


@hookimpl
def register_migrations():
    # after_migrate: SQLite batch rebuilds of `events` drop the FTS triggers.
    return [Migrations("events", "chronos_events", after_migrate=ensure_sqlite_fts)]


@hookimpl
def register_services():
    return [Service("events.store", EventStore, lambda ctx: SqlEventStore(ctx))]


@hookimpl
def register_routers():
    return [
        Router("events", router.router),
        Router("events-transfer", transfer.router),
        Router("events-feeds", feeds.router),
    ]


@hookimpl
def register_sources(ctx: PluginContext):
    return [LocalSource(ctx.section(EventsSettings).local_calendars)]


@hookimpl
def register_resources():
    return [INLINE_READER]
