"""The sync routes (/api/v1/events/sync, /api/v1/sync/...) and the /health sync block."""

from __future__ import annotations

import asyncio

from chronos.pagination import encode_cursor
from chronos.testing import FakeSource
from kernel_support import is_problem
from sync_support import draft, pipeline_plugins


def pipeline_of(app):
    return app.state.runtime.pipeline


def source_with(*calendars: str) -> FakeSource:
    src = FakeSource(page=2, calendars=calendars)
    for c in calendars:
        src.replace(draft(f"{c}-1", "Standup"), draft(f"{c}-2", "Review", hours=2), calendar=c)
    return src


async def test_post_sync_starts_runs_and_returns_their_ids(chronos_app, api_client):
    src = source_with("cal", "other")
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        r = await c.post("/api/v1/events/sync")
        assert r.status_code == 202, r.text
        runs = r.json()["runs"]
        assert sorted((x["source"], x["calendar_id"]) for x in runs) == [("fake", "cal"), ("fake", "other")]
        await pipeline_of(app).wait()
        for run in runs:
            got = (await c.get(f"/api/v1/sync/runs/{run['id']}")).json()
            assert got["status"] == "ok" and got["added"] == 2 and got["trigger"] == "api"
            assert got["started_at"].endswith("Z") and got["finished_at"].endswith("Z")

        r = await c.post("/api/v1/events/sync", json={"source": "fake", "calendar_id": "cal", "full": True})
        assert r.status_code == 202 and len(r.json()["runs"]) == 1
        await pipeline_of(app).wait()
        run = (await c.get(f"/api/v1/sync/runs/{r.json()['runs'][0]['id']}")).json()
        assert run["full"] and run["unchanged"] == 2 and not run["not_modified"]

        audit = await (await api_client(app, scopes=["admin"])).get("/api/v1/audit", params={"entity": "sync_run"})
        assert len(audit.json()["items"]) == 3


async def test_post_sync_errors(chronos_app, api_client):
    src = source_with("cal")
    src.gate = asyncio.Event()
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        is_problem(await c.post("/api/v1/events/sync", json={"source": "nope"}), 404)
        body = is_problem(await c.post("/api/v1/events/sync", json={"source": "fake", "calendar_id": "x"}), 404)
        assert "no calendar 'x'" in body["detail"]
        body = is_problem(await c.post("/api/v1/events/sync", json={"sourc": "fake"}), 422)
        assert body["errors"][0]["pointer"] == "/sourc"
        assert (await c.post("/api/v1/events/sync", json={"source": "fake"})).status_code == 202
        body = is_problem(await c.post("/api/v1/events/sync", json={"source": "fake", "calendar_id": "cal"}), 409)
        running = (await c.get("/api/v1/sync/runs", params={"status": "running"})).json()["items"]
        assert body["running"] == [{"source": "fake", "calendar_id": "cal", "run_id": running[0]["id"]}]
        assert f"(run {running[0]['id']})" in body["detail"]
        src.gate.set()
        await pipeline_of(app).wait()
        reader = await api_client(app, scopes=["events.read"])
        is_problem(await reader.post("/api/v1/events/sync"), 403)


async def test_list_runs_filters_and_pages(chronos_app, api_client):
    src = source_with("cal", "other")
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        pipe = pipeline_of(app)
        for _ in range(3):
            await pipe.run("fake", "cal", full=True)
        await pipe.run("fake", "other")
        src.fail_at = 0
        await pipe.run("fake", "other", full=True)
        c = await api_client(app, scopes=["events.read"])
        r = await c.get("/api/v1/sync/runs", params={"limit": 2})
        page1 = r.json()
        assert [x["calendar_id"] for x in page1["items"]] == ["other", "other"] and page1["next_cursor"]
        assert page1["items"][0]["status"] == "error" and "connection lost" in page1["items"][0]["error"]
        page2 = (await c.get("/api/v1/sync/runs", params={"limit": 2, "cursor": page1["next_cursor"]})).json()
        page3 = (await c.get("/api/v1/sync/runs", params={"limit": 2, "cursor": page2["next_cursor"]})).json()
        ids = [x["id"] for x in page1["items"] + page2["items"] + page3["items"]]
        assert ids == sorted(ids, reverse=True) and len(ids) == 5 and page3["next_cursor"] is None
        only = (await c.get("/api/v1/sync/runs", params={"calendar_id": "cal", "source": "fake"})).json()["items"]
        assert len(only) == 3 and {x["calendar_id"] for x in only} == {"cal"}
        errors = (await c.get("/api/v1/sync/runs", params={"status": "error"})).json()["items"]
        assert len(errors) == 1
        is_problem(await c.get("/api/v1/sync/runs", params={"cursor": "garbage!"}), 400)
        for beyond_bigint in (2**63, 2**70, -(2**70)):  # well-formed, but no BIGINT can hold it
            is_problem(
                await c.get("/api/v1/sync/runs", params={"cursor": encode_cursor("sync_runs", [beyond_bigint])}), 400
            )
        is_problem(await c.get("/api/v1/sync/runs", params={"status": "weird"}), 422)
        is_problem(await c.get("/api/v1/sync/runs", params={"limit": 0}), 422)
        is_problem(await c.get("/api/v1/sync/runs/999999"), 404)
        cals = (await c.get("/api/v1/sync/calendars")).json()
        assert [(x["calendar_id"], x["last_status"]) for x in cals] == [("cal", "ok"), ("other", "error")]


async def test_health_shows_the_last_sync_and_degrades_on_failure(chronos_app, api_client):
    src = source_with("cal", "other")
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        c = await api_client(app, scopes=["events.read", "health.read"])
        block = (await c.get("/health")).json()["checks"]["sync"]
        assert block["calendars"]["fake/cal"]["status"] == "never synced"
        pipe = pipeline_of(app)
        await pipe.run("fake", "cal")
        await pipe.run("fake", "other")
        block = (await c.get("/health")).json()["checks"]["sync"]
        assert block["status"] == "ok" and block["calendars"]["fake/cal"]["status"] == "ok"
        src.fail_at = 0
        await pipe.run("fake", "other", full=True)
        health = (await c.get("/health")).json()
        block = health["checks"]["sync"]
        assert block["status"] == "degraded" and health["status"] in ("degraded", "error")
        assert "connection lost" in block["calendars"]["fake/other"]["error"]
        assert block["calendars"]["fake/cal"]["status"] == "ok"
        src.fail_at = None
        await pipe.run("fake", "other", full=True)
        assert (await c.get("/health")).json()["checks"]["sync"]["status"] == "ok"


async def test_the_document_names_the_enabled_sources_and_their_calendars(chronos_app):
    async with chronos_app(plugins=pipeline_plugins(source_with("cal", "other"))) as app:
        schema = app.openapi()["components"]["schemas"]["SyncRequest"]
    props = schema["properties"]
    assert props["source"]["anyOf"][0]["enum"] == ["fake"]
    assert props["calendar_id"]["anyOf"][0]["enum"] == ["cal", "other"]
    # A named source narrows the calendars to its own.
    (named,) = [b for b in schema["anyOf"] if b.get("required") == ["source"]]
    assert named["properties"] == {
        "source": {"enum": ["fake"]},
        "calendar_id": {"anyOf": [{"enum": ["cal", "other"]}, {"type": "null"}]},
    }
