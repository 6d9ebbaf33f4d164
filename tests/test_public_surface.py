"""A small public surface: minimal /health without a key, private /metrics and docs by setting,
and no source URL's path, query or credentials in run errors, logs or API answers."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from chronos.plugin import SourceError
from chronos.testing import FakeSource, client, fake_source_plugin, sync_now
from kernel_support import is_problem, wait_until

SECRET_PATH = "pr1vate-S3CRETPATH"
SECRET_QUERY = "S3CRETQUERY"
SECRET_PASSWORD = "S3CRETPW"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- /health ----------------------------------------------------------------------------------------


async def test_health_without_a_key_answers_only_statuses(chronos_app, api_client):
    def boom(_ctx: Any) -> None:
        raise RuntimeError("secret detail of a broken plugin")

    from kernel_support import make_plugin

    async with chronos_app(plugins=[("shaky", make_plugin(register_routers=boom))]) as app:
        await wait_until(lambda: app.state.chronos.jobs.last_beat, what="first heartbeat")
        async with client(app) as anonymous:
            r = await anonymous.get("/health")
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"status", "checks"} and body["status"] == "degraded"
        assert all(check == {"status": check["status"]} for check in body["checks"].values()), body
        assert body["checks"]["plugins"] == {"status": "degraded"}
        assert "shaky" not in r.text and "secret detail" not in r.text

        for scopes in (["health.read"], ["admin"]):
            detailed = (await (await api_client(app, scopes=scopes)).get("/health")).json()
            assert detailed["version"] and detailed["checks"]["plugins"]["plugins"] == {"shaky": "failed"}
            assert "dialect" in detailed["checks"]["database"]
        lacking = (await (await api_client(app, scopes=["events.read"])).get("/health")).json()
        assert set(lacking) == {"status", "checks"}


async def test_health_with_an_invalid_key_is_401(chronos_app):
    async with chronos_app() as app:
        for headers in ({"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}, {"Authorization": "Basic x"}):
            async with client(app) as c:
                is_problem(await c.get("/health", headers=headers), 401)


async def test_an_unreachable_database_is_only_error_without_a_key(chronos_app, db_backend, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    url = f"sqlite+aiosqlite:///{blocker}/chronos.db"
    async with chronos_app(config={"database": {"url": url, "migrate_on_start": False}}) as app, client(app) as c:
        r = await c.get("/health")
    assert r.status_code == 503
    assert r.json() == {"status": "error", "checks": {"database": {"status": "error"}, "plugins": {"status": "ok"}}}
    assert str(blocker) not in r.text


# -- /metrics, /docs, /openapi.json -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "public"),
    [
        ({}, True),  # loopback (the default) while bound to 127.0.0.1
        ({"host": "::1"}, True),
        ({"host": "0.0.0.0"}, False),
        ({"host": "0.0.0.0", "public_metrics": True}, True),
        ({"public_metrics": False}, False),
    ],
    ids=["loopback-default", "loopback-v6", "all-interfaces", "public", "private"],
)
async def test_metrics_are_public_by_setting(chronos_app, api_client, server, public):
    async with chronos_app(config={"server": server}) as app:
        async with client(app) as anonymous:
            r = await anonymous.get("/metrics")
        if public:
            assert r.status_code == 200 and "chronos_http_requests_total" in r.text
            return
        is_problem(r, 401)
        is_problem(await (await api_client(app, scopes=["events.read"])).get("/metrics"), 403)
        for scopes in (["metrics.read"], ["admin"]):
            assert (await (await api_client(app, scopes=scopes)).get("/metrics")).status_code == 200


async def test_docs_and_openapi_are_public_unless_turned_off(chronos_app, api_client):
    async with chronos_app() as app, client(app) as anonymous:
        assert (await anonymous.get("/openapi.json")).status_code == 200
        assert (await anonymous.get("/docs")).status_code == 200
    async with chronos_app(config={"server": {"public_docs": False}}) as app:
        async with client(app) as anonymous:
            for path in ("/openapi.json", "/docs", "/redoc"):
                is_problem(await anonymous.get(path), 401)
        reader = await api_client(app, scopes=["metrics.read"])
        assert (await reader.get("/openapi.json")).json()["info"]["title"] == "Chronos Engine"
        assert (await reader.get("/docs")).status_code == 200
        is_problem(await (await api_client(app, scopes=["events.read"])).get("/openapi.json"), 403)


# -- source URLs never shown ------------------------------------------------------------------------


class LeakySource(FakeSource):
    """Fails with an error whose text holds a private feed URL (as an HTTP library's message would)."""

    name = "leaky"

    async def fetch(self, calendar, cursor):  # type: ignore[override]
        url = f"https://bob:{SECRET_PASSWORD}@feeds.example.org:8443/{SECRET_PATH}/cal.ics?token={SECRET_QUERY}"
        raise SourceError(f"GET {url} failed: 'connection reset' ({url})")
        yield  # pragma: no cover


def assert_no_secret(text: str) -> None:
    for secret in (SECRET_PATH, SECRET_QUERY, SECRET_PASSWORD):
        assert secret not in text, text


async def test_a_source_error_never_shows_the_url_path_query_or_credentials(chronos_app, api_client, capsys):
    src = LeakySource(calendars=["team"])
    config = {"logging": {"level": "info"}}
    async with chronos_app(plugins=[fake_source_plugin(src), "events"], config=config) as app:
        run = await sync_now(app, "leaky", "team")
        assert run.status == "error"
        assert (
            run.error
            == "GET https://feeds.example.org:8443 failed: 'connection reset' (https://feeds.example.org:8443)"
        )
        c = await api_client(app, scopes=["events.read", "health.read"])
        answers = [(await c.get("/api/v1/sync/runs")).text, (await c.get(f"/api/v1/sync/runs/{run.id}")).text]
        answers.append((await c.get("/health")).text)
    logs = capsys.readouterr().err
    assert "sync_error" in logs
    for text in (run.error, json.dumps(run.errors), *answers, logs):
        assert_no_secret(text)


async def test_a_failing_ics_feed_never_shows_its_secret_path_or_query(chronos_app, api_client, capsys):
    url = f"http://127.0.0.1:{free_port()}/{SECRET_PATH}/cal.ics?token={SECRET_QUERY}"
    config = {
        "logging": {"level": "info"},
        "ics": {"calendars": [{"id": "private", "url": url}]},
        "network": {"allow": ["127.0.0.1/32"]},  # loopback is refused unless allow-listed (a refusal is tested below)
    }
    async with chronos_app(plugins=["ics", "events"], config=config) as app:
        run = await sync_now(app, "ics", "private")
        assert run.status == "error" and run.error.startswith("cannot connect to http://127.0.0.1:"), run.error
        c = await api_client(app, scopes=["events.read", "health.read"])
        answers = [(await c.get("/api/v1/sync/runs")).text, (await c.get("/health")).text]
    logs = capsys.readouterr().err
    assert "sync_error" in logs or "sync_run" in logs
    for text in (run.error, *answers, logs):
        assert_no_secret(text)


async def test_a_refused_ics_feed_never_shows_its_secret_path_or_query(chronos_app):
    url = f"http://127.0.0.1:{free_port()}/{SECRET_PATH}/cal.ics?token={SECRET_QUERY}"
    config = {"ics": {"calendars": [{"id": "private", "url": url}]}}
    async with chronos_app(plugins=["ics", "events"], config=config) as app:
        run = await sync_now(app, "ics", "private")
    assert run.status == "error" and "refused: 127.0.0.1 is a loopback address" in run.error, run.error
    assert_no_secret(run.error)
