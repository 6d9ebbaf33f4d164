"""One event: get, patch, delete with tombstones, creation through the pipeline, links."""

from __future__ import annotations

from chronos import testing as kit
from chronos.plugin import EventIntake, encode_cursor
from events_support import T0, apply, ev, z

PLUGINS = ["events"]


async def _audit(app, entity):
    return [(r["action"], r["entity_id"]) for r in await kit.audit_entries(app, entity)]


async def test_patch_fields_and_subtasks_recompute_all_done_and_hash(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        tasks = [{"id": "a", "text": "slides"}, {"id": "b", "text": "room"}]
        r = await apply(app, [ev("m", T0, sub_tasks=tasks, tags=["work"])])
        eid = r.added[0].id
        c = await api_client(app, scopes=["events.read", "events.write"])
        before = (await c.get(f"/api/v1/events/{eid}")).json()
        assert before["all_done"] is False and before["sub_tasks"][0] == {"id": "a", "text": "slides", "done": False}

        r = await c.patch(f"/api/v1/events/{eid}", json={"sub_tasks": [{"id": "a", "done": True}]})
        assert r.status_code == 200, r.text
        assert r.json()["all_done"] is False and r.json()["content_hash"] != before["content_hash"]
        r = await c.patch(
            f"/api/v1/events/{eid}",
            json={"sub_tasks": [{"id": "b", "done": True}], "title": "Renamed", "metadata": {"room": "2.14"}},
        )
        body = r.json()
        assert body["all_done"] is True and body["title"] == "Renamed" and body["metadata"] == {"room": "2.14"}
        # include_completed=false hides it now
        lst = (await c.get("/api/v1/events", params={"from": z(T0), "include_completed": "false"})).json()
        assert lst["items"] == []
        # moving it in time
        r = await c.patch(
            f"/api/v1/events/{eid}",
            json={"start_utc": "2030-03-05T10:00:00+02:00", "end_utc": "2030-03-05T11:30:00+02:00"},
        )
        assert (r.json()["start_utc"], r.json()["end_utc"]) == ("2030-03-05T08:00:00Z", "2030-03-05T09:30:00Z")
        # a re-sync of the unchanged source entry keeps every local edit
        res = await apply(app, [ev("m", T0, sub_tasks=tasks, tags=["work"])])
        assert res.unchanged == 1
        assert (await c.get(f"/api/v1/events/{eid}")).json()["title"] == "Renamed"

        bad = [
            ({"sub_tasks": [{"id": "zzz", "done": True}]}, "/sub_tasks/0/id"),
            ({"title": None}, "/title"),
            ({"end_utc": "2030-03-01T00:00:00Z"}, None),
            ({"start_utc": "2030-03-05T10:00:00"}, "/start_utc"),
            ({"status": "maybe"}, "/status"),
            ({"unknown": 1}, "/unknown"),
            ({"end_utc": "9999-12-31T23:59:59-05:00"}, "/end_utc"),  # beyond the year 9999 in UTC
            ({"start_utc": "0001-01-01T00:00:00+01:00"}, "/start_utc"),  # before the year 1 in UTC
        ]
        for payload, pointer in bad:
            r = await c.patch(f"/api/v1/events/{eid}", json=payload)
            assert r.status_code == 422, (payload, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            if pointer:
                assert pointer in [e["pointer"] for e in r.json()["errors"]], r.json()
        assert (await c.patch("/api/v1/events/424242", json={"title": "x"})).status_code == 404
        assert [a for a, _ in await _audit(app, "event")] == ["update", "update", "update"]


async def test_delete_tombstones_synced_events_but_not_local_ones(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        r = await apply(app, [ev("synced", T0), ev("mine", T0, source="local", calendar="local"), ev("keep", T0)])
        synced, mine, keep = (a.id for a in r.added)
        c = await api_client(app, scopes=["events.write", "events.read"])
        assert (await c.delete(f"/api/v1/events/{synced}")).status_code == 204
        assert (await c.delete(f"/api/v1/events/{mine}")).status_code == 204
        assert (await c.delete(f"/api/v1/events/{keep}", params={"tombstone": "false"})).status_code == 204
        assert (await c.get(f"/api/v1/events/{synced}")).status_code == 404
        assert (await c.delete(f"/api/v1/events/{synced}")).status_code == 404
        # the next sync brings back only what was deleted without a tombstone
        res = await apply(app, [ev("synced", T0), ev("mine", T0, source="local", calendar="local"), ev("keep", T0)])
        assert res.suppressed == 1 and sorted(a.event.uid for a in res.added) == ["keep", "mine"]
        assert await _audit(app, "event") == [("delete", str(synced)), ("delete", str(mine)), ("delete", str(keep))]


async def test_links(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        r = await apply(app, [ev("a", T0), ev("b", T0), ev("c", T0)])
        a, b, cc = (x.id for x in r.added)
        c = await api_client(app, scopes=["events.write", "events.read"])
        r = await c.post(f"/api/v1/events/{a}/links", json={"to_event_id": b, "type": "blocks"})
        assert r.status_code == 201, r.text
        link = r.json()
        assert (link["from_event_id"], link["to_event_id"], link["type"], link["direction"]) == (
            a,
            b,
            "blocks",
            "outgoing",
        )
        assert (await c.post(f"/api/v1/events/{a}/links", json={"to_event_id": b, "type": "blocks"})).status_code == 409
        assert (
            await c.post(f"/api/v1/events/{a}/links", json={"to_event_id": b, "type": "relates"})
        ).status_code == 201
        assert (
            await c.post(f"/api/v1/events/{cc}/links", json={"to_event_id": a, "type": "follows"})
        ).status_code == 201
        r = await c.post(f"/api/v1/events/{a}/links", json={"to_event_id": a, "type": "relates"})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/to_event_id"
        assert (
            await c.post(f"/api/v1/events/{a}/links", json={"to_event_id": 999999, "type": "relates"})
        ).status_code == 422
        assert (await c.post(f"/api/v1/events/{a}/links", json={"to_event_id": b, "type": "likes"})).status_code == 422
        assert (
            await c.post("/api/v1/events/999999/links", json={"to_event_id": b, "type": "blocks"})
        ).status_code == 404

        page = (await c.get(f"/api/v1/events/{a}/links", params={"limit": 2})).json()
        rest = (await c.get(f"/api/v1/events/{a}/links", params={"cursor": page["next_cursor"]})).json()
        items = page["items"] + rest["items"]
        assert [(i["type"], i["direction"]) for i in items] == [
            ("blocks", "outgoing"),
            ("relates", "outgoing"),
            ("follows", "incoming"),
        ]
        assert (await c.get(f"/api/v1/events/{b}/links", params={"cursor": page["next_cursor"]})).status_code == 400
        for beyond_bigint in (2**63, 2**70, -(2**70)):  # well-formed, but no BIGINT can hold it
            r = await c.get(
                f"/api/v1/events/{a}/links", params={"cursor": encode_cursor(f"event-links:{a}", [beyond_bigint])}
            )
            assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json"), r.text

        assert (await c.delete(f"/api/v1/events/{a}/links/{link['id']}")).status_code == 204
        assert (await c.delete(f"/api/v1/events/{a}/links/{link['id']}")).status_code == 404
        assert (await c.delete(f"/api/v1/events/{a}/links", params={"to": b, "type": "relates"})).status_code == 204
        assert (await c.delete(f"/api/v1/events/{a}/links", params={"to": b})).status_code == 404
        # deleting an event removes its links
        await c.delete(f"/api/v1/events/{cc}")
        assert (await c.get(f"/api/v1/events/{a}/links")).json()["items"] == []
        assert [x for x, _ in await _audit(app, "event_link")] == ["create", "create", "create", "delete", "delete"]


async def test_create_answers_503_without_a_pipeline(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        # Simulate a kernel without the intake service (e.g. a pipeline that failed to start).
        app.state.chronos._services.pop(EventIntake, None)
        c = await api_client(app, scopes=["events.write"])
        r = await c.post("/api/v1/events", json={"title": "Lunch", "start": "2030-03-04T12:00:00+01:00"})
        assert r.status_code == 503 and r.json()["type"].endswith("pipeline-unavailable")


async def test_create_runs_through_the_pipeline(chronos_app, api_client):
    async with chronos_app(plugins=["events", "normalize"]) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        payload = {
            "title": "Prepare #Release notes",
            "description": "Checklist:\n[ ] draft\n[x] review\nSome prose [ ] not a task",
            "start": "2030-03-04T12:00:00+01:00",
            "end": "2030-03-04T13:00:00+01:00",
        }
        r = await c.post("/api/v1/events", json=payload, headers={"Idempotency-Key": "k-1"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["source"] == "local" and body["calendar_id"] == "local"
        assert body["start_utc"] == "2030-03-04T11:00:00Z"
        assert "release" in body["tags"]  # enriched: hashtag
        assert [t["done"] for t in body["sub_tasks"]] == [False, True]  # enriched: checklist
        assert r.headers["location"] == f"/api/v1/events/{body['id']}"
        again = await c.post("/api/v1/events", json=payload, headers={"Idempotency-Key": "k-1"})
        assert again.status_code == 200 and again.json()["id"] == body["id"]
        other = await c.post("/api/v1/events", json=payload)
        assert other.status_code == 201 and other.json()["id"] != body["id"]

        day = await c.post("/api/v1/events", json={"title": "Holiday", "start": "2030-03-06", "end": "2030-03-07"})
        assert day.status_code == 201, day.text
        assert (day.json()["all_day"], day.json()["start_date"], day.json()["end_date"]) == (
            True,
            "2030-03-06",
            "2030-03-07",
        )

        for bad, status in [
            ({"title": "x", "start": "2030-03-04T12:00:00"}, 422),  # naive
            ({"title": "x", "start": "2030-03-04T12:00:00Z", "calendar_id": "work"}, 422),  # not local
            ({"title": "x", "start": "2030-03-04T12:00:00Z", "end": "2030-03-04T11:00:00Z"}, 422),  # end before start
            ({"title": "", "start": "2030-03-04T12:00:00Z"}, 422),
        ]:
            r = await c.post("/api/v1/events", json=bad)
            assert r.status_code == status, (bad, r.text)
        assert (
            await c.post("/api/v1/events", content=b"{nope", headers={"content-type": "application/json"})
        ).status_code == 400


async def test_create_with_an_unknown_time_zone_is_422(chronos_app, api_client):
    async with chronos_app(plugins=["events", "normalize"]) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        r = await c.post("/api/v1/events", json={"title": "x", "start": "2030-08-18", "timezone": "Mars/Olympus"})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "Mars/Olympus" in r.json()["detail"]
