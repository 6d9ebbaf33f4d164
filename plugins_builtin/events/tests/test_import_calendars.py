"""POST /api/v1/events/import follows the calendar rules of POST /api/v1/events and parses off the event loop."""

from __future__ import annotations

import threading

from chronos.testing import FakeSource, fake_source_plugin

from chronos_events import transfer_service


def _event(i: int, source: str, calendar_id: str) -> dict:
    return {
        "id": i,
        "source": source,
        "calendar_id": calendar_id,
        "uid": f"u{i}",
        "start_utc": "2030-01-01T10:00:00Z",
        "end_utc": "2030-01-01T11:00:00Z",
    }


def _doc(*events: dict) -> dict:
    return {"format": "chronos-events", "version": 1, "events": list(events)}


async def test_import_refuses_calendars_that_may_not_be_written(chronos_app, api_client):
    plugins = ["events", fake_source_plugin(FakeSource([("ro", True), ("rw", False)]))]
    async with chronos_app(plugins=plugins, config={"events": {"local_calendars": ["local", "notes"]}}) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        r = await c.post(
            "/api/v1/events/import", json=_doc(_event(1, "local", "notes"), _event(2, "local", "elsewhere"))
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert [e["pointer"] for e in r.json()["errors"]] == ["/events/1/calendar_id"]
        r = await c.post("/api/v1/events/import", json=_doc(_event(1, "fake", "rw"), _event(2, "fake", "ro")))
        assert r.status_code == 422 and [e["pointer"] for e in r.json()["errors"]] == ["/events/1/calendar_id"]
        assert "read-only" in r.json()["errors"][0]["detail"]
        # nothing was written by the refused imports
        assert (await c.get("/api/v1/events", params={"direction": "all"})).json()["items"] == []
        r = await c.post("/api/v1/events/import", json=_doc(_event(1, "local", "notes"), _event(2, "fake", "rw")))
        assert r.status_code == 200 and r.json()["imported"] == 2, r.text


async def test_import_parses_in_a_thread(chronos_app, api_client, monkeypatch):
    seen: list[bool] = []
    original = transfer_service.parse_document

    def spy(raw, settings):
        seen.append(threading.current_thread() is threading.main_thread())
        return original(raw, settings)

    monkeypatch.setattr(transfer_service, "parse_document", spy)
    async with chronos_app(plugins=["events"]) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        r = await c.post("/api/v1/events/import", json=_doc(_event(1, "local", "local")))
        assert r.status_code == 200, r.text
    assert seen == [False]


async def test_the_document_names_the_local_calendars(chronos_app):
    async with chronos_app(plugins=["events"], config={"events": {"local_calendars": ["local", "notes"]}}) as app:
        prop = app.openapi()["components"]["schemas"]["EventCreate"]["properties"]["calendar_id"]
    assert prop["anyOf"] == [
        {"type": "string", "maxLength": 200, "minLength": 1, "enum": ["local", "notes"]},
        {"type": "null"},
    ]
