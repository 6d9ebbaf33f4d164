"""HTTP behaviour: problem+json for every error, request ids, size limits, logs and metrics."""

from __future__ import annotations

import json
import re

from fastapi import APIRouter, Depends, Request

from chronos.plugin import Router, require_scope
from chronos.testing import client
from kernel_support import is_problem, make_plugin

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def probe_plugin():
    """A route that fails with internals in the exception, and one that logs secrets."""
    router = APIRouter(prefix="/probe", dependencies=[Depends(require_scope("events.read"))])

    @router.get("/crash")
    async def crash() -> dict:
        raise RuntimeError("password=hunter2 in /srv/chronos/secret_module.py")

    @router.get("/log")
    async def log_something(request: Request) -> dict:
        log = request.app.state.chronos.logger("probe")
        log.warning("probe_logged", api_key="chr_k_abc_supersecret", password="hunter2", note="visible")
        return {}

    return make_plugin(register_routers=lambda: [Router("probe", router)])


def log_lines(captured: str) -> list[dict]:
    out = []
    for line in captured.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


# -- problem+json for every error ------------------------------------------------------------


async def test_unknown_route_is_404_problem(chronos_app, api_client):
    async with chronos_app() as app:
        c = await api_client(app, scopes=["admin"])
        for path in ("/nope", "/api/v1/nope"):
            body = is_problem(await c.get(path), 404)
            assert body["instance"] == path and path in body["detail"]


async def test_wrong_method_is_405_problem_with_allow(chronos_app, api_client):
    async with chronos_app() as app:
        c = await api_client(app, scopes=["admin"])
        r = await c.put("/api/v1/keys")
        body = is_problem(r, 405)
        assert "PUT is not allowed" in body["detail"]
        assert r.headers["allow"] == "GET, POST"


async def test_validation_errors_are_422_with_json_pointers(chronos_app, api_client):
    async with chronos_app() as app:
        c = await api_client(app, scopes=["admin"])
        r = await c.post("/api/v1/keys", json={"name": 5, "scopes": "admin", "systems": ["ok", "bad system"]})
        body = is_problem(r, 422)
        pointers = {e["pointer"] for e in body["errors"]}
        assert {"/name", "/scopes", "/systems/1"} <= pointers, body
        assert all(e["detail"] for e in body["errors"])
        body = is_problem(await c.get("/api/v1/audit", params={"limit": "many"}), 422)
        assert [e["pointer"] for e in body["errors"]] == ["/query/limit"]
        body = is_problem(await c.post("/api/v1/keys", json={"scopes": ["admin"]}), 422)
        assert [e["pointer"] for e in body["errors"]] == ["/name"]


async def test_malformed_json_is_400(chronos_app, api_client):
    async with chronos_app() as app:
        c = await api_client(app, scopes=["admin"])
        r = await c.post("/api/v1/keys", content=b'{"name": "x", ', headers={"content-type": "application/json"})
        body = is_problem(r, 400)
        assert body["type"].endswith("malformed-body") and "not valid JSON" in body["detail"]
        r = await c.post("/api/v1/keys", content=b'\xff\xfe\x00{"name"', headers={"content-type": "application/json"})
        body = is_problem(r, 400)
        assert body["type"].endswith("malformed-body")


async def test_uncaught_exception_is_500_without_internals(chronos_app, api_client, capsys):
    async with chronos_app(plugins=[("probe", probe_plugin())]) as app:
        c = await api_client(app, scopes=["events.read"])
        r = await c.get("/api/v1/probe/crash", headers={"X-Request-ID": "crash-42"})
        body = is_problem(r, 500)
        for leak in ("hunter2", "RuntimeError", "secret_module", "Traceback", "/srv"):
            assert leak not in r.text
        assert r.headers["x-request-id"] == "crash-42"
    (line,) = [entry for entry in log_lines(capsys.readouterr().err) if entry.get("event") == "unhandled_error"]
    assert line["request_id"] == "crash-42" and line["error_type"] == "RuntimeError"
    assert body["detail"].startswith("An internal error occurred")


# -- request ids -------------------------------------------------------------------------------

REQUEST_IDS = [
    ("abc-123", True),
    ("trace:4bf92f3577b34da6.a3ce929d0e0e4736@edge/1", True),
    ("abc\x01def", False),
    ("new\nline", False),
    ("x" * 200, False),
    ("sp ace", False),
    ("", False),
    (None, False),
]


async def test_request_id_is_accepted_sanitised_and_echoed(chronos_app):
    async with chronos_app() as app, client(app) as c:
        for sent, kept in REQUEST_IDS:
            headers = {} if sent is None else {"X-Request-ID": sent}
            for path, status in (("/health", 200), ("/api/v1/keys", 401)):  # errors carry it too
                r = await c.get(path, headers=headers)
                got = r.headers["x-request-id"]
                assert r.status_code == status
                assert (got == sent) if kept else HEX_ID.match(got), (sent, got)


async def test_generated_request_ids_are_unique(chronos_app):
    async with chronos_app() as app, client(app) as c:
        ids = {(await c.get("/health")).headers["x-request-id"] for _ in range(5)}
        assert len(ids) == 5


# -- size limits ---------------------------------------------------------------------------------


async def test_huge_headers_get_431(chronos_app, api_client):
    async with chronos_app(config={"server": {"max_header_bytes": 4096}}) as app:
        c = await api_client(app, scopes=["admin"])
        assert (await c.get("/api/v1/keys", headers={"X-Filler": "y" * 3000})).status_code == 200
        body = is_problem(await c.get("/api/v1/keys", headers={"X-Filler": "y" * 5000}), 431)
        assert "4096 bytes" in body["detail"]


async def test_body_over_limit_gets_413_declared_or_streamed(chronos_app, api_client):
    async with chronos_app(config={"server": {"max_body_bytes": 2048}}) as app:
        c = await api_client(app, scopes=["admin"])
        big = json.dumps({"name": "x" * 3000, "scopes": ["events.read"]}).encode()
        is_problem(await c.post("/api/v1/keys", content=big, headers={"content-type": "application/json"}), 413)

        async def chunks():
            for i in range(0, len(big), 512):
                yield big[i : i + 512]

        r = await c.post("/api/v1/keys", content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        body = is_problem(r, 413)
        assert "2048 bytes" in body["detail"]
        is_problem(
            await c.post(
                "/api/v1/keys", content=b"{}", headers={"content-type": "application/json", "content-length": "abc"}
            ),
            400,
        )
        assert len((await c.get("/api/v1/keys")).json()) == 1  # only the test's own key


# -- logs and metrics -------------------------------------------------------------------------------


async def test_logs_are_json_lines_with_request_id_and_redacted_secrets(chronos_app, api_client, capsys):
    async with chronos_app(plugins=[("probe", probe_plugin())], config={"logging": {"level": "info"}}) as app:
        c = await api_client(app, scopes=["events.read"])
        assert (await c.get("/api/v1/probe/log", headers={"X-Request-ID": "log-7"})).status_code == 200
    err = capsys.readouterr().err
    lines = log_lines(err)
    assert lines, err
    (probe,) = [entry for entry in lines if entry["event"] == "probe_logged"]
    assert probe["request_id"] == "log-7" and probe["plugin"] == "probe" and probe["level"] == "warning"
    assert probe["api_key"] == "***" and probe["password"] == "***" and probe["note"] == "visible"
    assert "supersecret" not in err and "hunter2" not in err
    assert all("timestamp" in entry and "level" in entry for entry in lines)
    started = [entry for entry in lines if entry["event"] == "started"]
    assert started and "request_id" not in started[0]  # bound per request only


async def test_metrics_are_prometheus_text(chronos_app):
    async with chronos_app() as app, client(app) as c:
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/api/v1/keys")).status_code == 401
        r = await c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert "# TYPE chronos_http_requests_total counter" in text
        assert re.search(r'chronos_http_requests_total\{method="GET",route="/health",status="200"\} [1-9]', text)
        assert re.search(r'chronos_http_requests_total\{method="GET",route="/api/v1/keys",status="401"\} [1-9]', text)
        assert "chronos_http_request_seconds_bucket" in text
