"""The ``analytics`` plugin: hook implementations only."""

from __future__ import annotations

from chronos.plugin import EventAnalytics, Router, Service, SettingsSection, hookimpl

from chronos_analytics import router
from chronos_analytics.enricher import FollowUpLabels
from chronos_analytics.service import SqlEventAnalytics
from chronos_analytics.settings import AnalyticsSettings


@hookimpl
def register_settings():
    return [SettingsSection("analytics", AnalyticsSettings)]


@hookimpl
def register_routers():
    return [Router("analytics", router.router)]


@hookimpl
def register_services():
    # GET /api/v1/events?analytics=true asks for this: the list and /analytics share one implementation.
    return [Service("analytics.events", EventAnalytics, SqlEventAnalytics)]


@hookimpl
def register_enrichers():
    return [FollowUpLabels()]
