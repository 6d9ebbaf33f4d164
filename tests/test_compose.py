"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the SQLite default, the
PostgreSQL profile (two API replicas serving only, one worker, health checks on /health/ready, a
named volume), and commands that the ``chronos`` CLI really has."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
import yaml

from chronos.cli import app as cli_app
from chronos.settings import KernelSettings
from kernel_support import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def by_command(services: dict[str, dict[str, Any]], command: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in services.items() if v.get("command", [None, None])[:2] == ["chronos", command]}


def database_url(service: dict[str, Any]) -> str:
    return str(service["environment"]["CHRONOS__DATABASE__URL"])


def probes(service: dict[str, Any]) -> str:
    return " ".join(service["healthcheck"]["test"])


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_the_default_runs_one_api_and_one_worker_on_sqlite_in_a_volume():
    default = {k: v for k, v in SERVICES.items() if not v.get("profiles")}
    apis, workers = by_command(default, "serve"), by_command(default, "worker")
    assert len(apis) == 1 and len(workers) == 1, sorted(default)
    (api_name, api), (_name, worker) = next(iter(apis.items())), next(iter(workers.items()))
    for service in (api, worker):
        assert database_url(service).startswith("sqlite+aiosqlite:////app/data/")
        assert any(v.split(":")[:2] == ["chronos-data", "/app/data"] for v in service["volumes"])
        assert service.get("deploy", {}).get("replicas", 1) == 1  # SQLite: one writer host
    assert "--no-jobs" in api["command"]
    assert "/health/ready" in probes(api)
    assert worker["depends_on"][api_name]["condition"] == "service_healthy"


def test_the_postgresql_profile_runs_two_serving_replicas_one_worker_and_the_database():
    pg = {k: v for k, v in SERVICES.items() if "postgres" in v.get("profiles", [])}
    apis, workers = by_command(pg, "serve"), by_command(pg, "worker")
    assert len(apis) == 1 and len(workers) == 1, sorted(pg)
    api, worker = next(iter(apis.values())), next(iter(workers.values()))
    assert api["deploy"]["replicas"] == 2
    assert worker.get("deploy", {}).get("replicas", 1) == 1
    assert "--no-jobs" in api["command"]
    # Two replicas on one host need a port each.
    (ports,) = api["ports"]
    first, last = (int(p) for p in ports.split(":")[0].split("-"))
    assert last - first + 1 == api["deploy"]["replicas"]

    database = SERVICES["postgres"]
    env = database["environment"]
    for service in (api, worker):
        url = database_url(service)
        assert url.startswith(f"postgresql+asyncpg://{env['POSTGRES_USER']}:"), url
        assert url.endswith(f"@postgres:5432/{env['POSTGRES_DB']}"), url
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        # The audit key is shared: from the environment, or one file in the shared volume.
        assert "CHRONOS_AUDIT_KEY" in service["environment"]
        assert any(v.startswith("chronos-data:/app/data") for v in service["volumes"])
    assert "/health/ready" in probes(api)
    assert "pg_isready" in probes(database)
    api_name = next(iter(apis))
    assert worker["depends_on"][api_name]["condition"] == "service_healthy"  # after the migrations

    volume = next(v.split(":")[0] for v in database["volumes"] if v.endswith("/var/lib/postgresql/data"))
    assert volume in COMPOSE["volumes"] and not volume.startswith(("/", "."))  # a named volume


CHRONOS_SERVICES = sorted(k for k, v in SERVICES.items() if v.get("command", [None])[0] == "chronos")


@pytest.mark.parametrize("name", CHRONOS_SERVICES)
def test_every_chronos_command_and_option_exists(name):
    command = SERVICES[name]["command"]
    click_group = typer.main.get_command(cli_app)
    sub = click_group.commands[command[1]]  # type: ignore[attr-defined]
    options = {opt for param in sub.params for opt in param.opts}
    assert {arg for arg in command[2:] if arg.startswith("--")} <= options


def test_compose_waits_longer_than_the_service_drains_on_sigterm():
    defaults = KernelSettings()
    drain = defaults.server.shutdown_timeout_seconds + defaults.scheduler.shutdown_timeout_seconds
    for name in CHRONOS_SERVICES:
        assert seconds(SERVICES[name]["stop_grace_period"]) > drain, name


def test_the_image_health_check_is_the_readiness_probe():
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    (check,) = re.findall(r"^HEALTHCHECK .*(?:\n\s+.*)*", dockerfile, flags=re.MULTILINE)
    assert "/health/ready" in check
