"""The ``planning`` plugin: hook implementations only."""

from __future__ import annotations

from chronos.plugin import (
    ConflictIndex,
    EventType,
    Job,
    Migrations,
    PluginContext,
    Router,
    Service,
    SettingsSection,
    hookimpl,
)

from chronos_planning import backfill, router
from chronos_planning.conflicts import CONFLICT_EVENT, ConflictSink, SqlConflictIndex, init_span
from chronos_planning.schemas import ConflictPublished
from chronos_planning.settings import PlanningSettings


@hookimpl
def register_settings():
    return [SettingsSection("planning", PlanningSettings)]


@hookimpl
def register_migrations():
    # Conflicts reference events.id (ON DELETE CASCADE): the events tables come first.
    return [Migrations("planning", "chronos_planning", requires=("events",))]


@hookimpl
def register_routers():
    return [Router("planning", router.router)]


@hookimpl
def register_sinks():
    return [ConflictSink()]


@hookimpl
def register_services():
    return [Service("planning.conflicts", ConflictIndex, SqlConflictIndex)]


@hookimpl
def register_schemas():
    return [EventType(CONFLICT_EVENT, ConflictPublished, "Two events newly conflict (published once per pair)")]


@hookimpl
def register_jobs():
    return [
        Job(
            backfill.JOB,
            backfill.job,
            interval_seconds=600,
            run_at_start=True,
            description="Compute the conflicts of events stored before planning saw them (plugin enabled late,"
            " conflict settings changed); batched and resumable, idle once done.",
        )
    ]


@hookimpl
async def on_startup(ctx: PluginContext) -> None:
    await init_span(ctx)
    await backfill.plan(ctx)
