"""Prometheus metrics shared by the kernel and plugins (``/metrics``)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS = Counter(
    "chronos_http_requests_total", "HTTP requests by method, route template and status", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "chronos_http_request_seconds",
    "HTTP request latency by route template",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
JOB_RUNS = Counter("chronos_job_runs_total", "Job runs by job and outcome", ["job", "status"])
PLUGIN_ERRORS = Counter("chronos_plugin_errors_total", "Errors raised by plugin code at runtime", ["plugin"])
SYNC_RUNS = Counter("chronos_sync_runs_total", "Sync runs by source and outcome", ["source", "status"])
QUEUE_DEPTH = Gauge("chronos_queue_depth", "Items waiting in a queue", ["queue"])
DELIVERIES = Counter("chronos_deliveries_total", "Outbound deliveries by channel and outcome", ["channel", "status"])


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
