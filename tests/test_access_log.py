"""Operators see requests: one JSON access-log line per request; request ids are sane before they are stored."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from chronos.db.models import AuditEntry
from chronos.testing import client

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def log_lines(captured: str) -> list[dict]:
    return [json.loads(line) for line in captured.splitlines() if line.strip().startswith("{")]


async def test_one_access_line_per_request_without_the_query_string(chronos_app, api_client, capsys):
    async with chronos_app(config={"logging": {"level": "info"}}) as app:
        admin = await api_client(app, scopes=["admin"])
        key_id = (await admin.get("/api/v1/keys")).json()[0]["id"]
        capsys.readouterr()
        r = await admin.get("/api/v1/keys", params={"token": "s3cr3t-in-query"}, headers={"X-Request-ID": "acc-1"})
        assert r.status_code == 200
        async with client(app) as anonymous:
            assert (await anonymous.get("/api/v1/keys", headers={"X-Request-ID": "acc-2"})).status_code == 401
    err = capsys.readouterr().err
    lines = [e for e in log_lines(err) if e.get("event") == "request"]
    first, second = (next(e for e in lines if e["request_id"] == rid) for rid in ("acc-1", "acc-2"))
    assert first["method"] == "GET" and first["path"] == "/api/v1/keys" and first["status"] == 200
    assert first["key_id"] == key_id and isinstance(first["duration_ms"], float) and first["level"] == "info"
    assert second["status"] == 401 and second["key_id"] is None
    assert "s3cr3t-in-query" not in err
    assert len([e for e in lines if e["request_id"] in ("acc-1", "acc-2")]) == 2


async def test_access_log_can_be_turned_off(chronos_app, capsys):
    async with chronos_app(config={"logging": {"level": "info", "access_log": False}}) as app, client(app) as c:
        assert (await c.get("/api/v1/keys", headers={"X-Request-ID": "quiet-1"})).status_code == 401
    assert not [e for e in log_lines(capsys.readouterr().err) if e.get("event") == "request"]


async def test_odd_or_over_long_request_ids_are_replaced_not_stored(chronos_app, api_client):
    async with chronos_app() as app:
        admin = await api_client(app, scopes=["admin"])
        for n, sent in enumerate(["x" * 129, "ok-id\n", "ok-id\nX-Injected: 1", "héllo"]):
            r = await admin.post(
                "/api/v1/keys",
                json={"name": f"k{n}", "scopes": ["events.read"]},
                headers={"X-Request-ID": sent.encode("latin-1")},
            )
            assert r.status_code == 201, r.text
            assert HEX_ID.match(r.headers["x-request-id"]), (sent, r.headers["x-request-id"])
        async with app.state.chronos.db.read() as s:
            stored = (await s.execute(select(AuditEntry.request_id))).scalars().all()
        assert len(stored) == 4 and all(HEX_ID.match(rid) for rid in stored), stored
