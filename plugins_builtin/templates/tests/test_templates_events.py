"""Event templates with the real events and normalize plugins: the event goes through the pipeline."""

from __future__ import annotations

EVENT_TPL = {
    "name": "review",
    "type": "event",
    "content": {
        "title": "Review {{ topic }}",
        "description": "Prepare {{ topic }}",
        "duration_minutes": 45,
        "time_of_day": "14:00",
        "timezone": "America/New_York",
        "tags": ["review"],
        "subtasks": ["Read the notes"],
    },
}


async def test_use_creates_a_stored_event(chronos_app, api_client):
    async with chronos_app(plugins=["templates", "events", "normalize"]) as app:
        c = await api_client(app, scopes=["templates.manage", "events.read", "events.write"])
        tid = (await c.post("/api/v1/templates", json=EVENT_TPL)).json()["id"]
        body = {"variables": {"topic": "Q3"}, "date": "2026-06-15"}
        r = await c.post(f"/api/v1/templates/{tid}/use", json=body, headers={"Idempotency-Key": "rev-1"})
        assert r.status_code == 200, r.text
        event = r.json()["event"]
        assert event["start_utc"] == "2026-06-15T18:00:00Z" and event["end_utc"] == "2026-06-15T18:45:00Z"
        got = await c.get(f"/api/v1/events/{event['id']}")
        assert got.status_code == 200, got.text
        stored = got.json()
        assert stored["title"] == "Review Q3" and "review" in stored["tags"]
        # Sub-tasks came from the checklist lines, parsed by the normalize plugin like any synced event.
        assert [t["text"] for t in stored.get("sub_tasks", [])] == ["Read the notes"]
        # The retry is answered from the usage log: still one event.
        again = await c.post(f"/api/v1/templates/{tid}/use", json=body, headers={"Idempotency-Key": "rev-1"})
        assert again.json()["event"]["id"] == event["id"]
        assert (await c.get(f"/api/v1/events/{event['id'] + 1}")).status_code == 404
