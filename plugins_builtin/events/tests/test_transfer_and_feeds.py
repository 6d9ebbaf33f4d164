"""Export → import round trip, import limits and conflicts; ICS feeds and their tokens."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import icalendar

from events_support import all_day, apply, ev

PLUGINS = ["events"]
NOW = datetime.now(UTC).replace(microsecond=0)


async def test_export_import_round_trip_with_a_dangling_link(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        tasks = [{"id": "1", "text": "x", "done": True}]
        r = await apply(
            app,
            [
                ev("a", NOW, tags=["t"], sub_tasks=tasks, metadata={"k": [1, 2]}, description="Ünïcode ✓"),
                ev("b", NOW + timedelta(hours=1), calendar="home"),
                all_day("c", date(2030, 1, 1), days=2),
            ],
        )
        a, b, c_ = (x.id for x in r.added)
        c = await api_client(app, scopes=["events.read", "events.write"])
        await c.post(f"/api/v1/events/{a}/links", json={"to_event_id": b, "type": "blocks"})
        await c.post(f"/api/v1/events/{c_}/links", json={"to_event_id": a, "type": "follows"})
        r = await c.get("/api/v1/events/export")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        doc = r.json()
        assert doc["format"] == "chronos-events" and doc["version"] == 1
        assert [e["uid"] for e in doc["events"]] == ["a", "b", "c"]
        assert len(doc["links"]) == 2
        only_home = (await c.get("/api/v1/events/export", params={"calendar_id": "home"})).json()
        assert [e["uid"] for e in only_home["events"]] == ["b"] and only_home["links"] == []

        # the events go away; importing brings them back with new ids, content and links intact
        await apply(app, [ev("filler", NOW)])
        for old in (a, b, c_):
            assert (await c.delete(f"/api/v1/events/{old}", params={"tombstone": "false"})).status_code == 204
        doc["links"].append({"from_event_id": a, "to_event_id": 987654, "type": "relates"})  # dangling
        r = await c.post("/api/v1/events/import", json=doc)
        assert r.status_code == 200, r.text
        res = r.json()
        assert res["imported"] == 3 and res["links_imported"] == 2
        assert res["dropped_links"] == [
            {
                "from_event_id": a,
                "to_event_id": 987654,
                "type": "relates",
                "reason": "an end of the link is not in the import",
            }
        ]
        new_a = res["id_map"][str(a)]
        assert new_a != a
        got = (await c.get(f"/api/v1/events/{new_a}")).json()
        assert got["description"] == "Ünïcode ✓" and got["metadata"] == {"k": [1, 2]} and got["all_done"] is True
        links = (await c.get(f"/api/v1/events/{new_a}/links")).json()["items"]
        assert sorted((i["type"], i["direction"]) for i in links) == [("blocks", "outgoing"), ("follows", "incoming")]
        # importing again conflicts as a whole (nothing written), unless told to skip
        r = await c.post("/api/v1/events/import", json=doc)
        assert r.status_code == 409 and len(r.json()["conflicts"]) == 3
        r = await c.post("/api/v1/events/import", params={"on_conflict": "skip"}, json=doc)
        assert r.json()["imported"] == 0 and r.json()["skipped"] == 3 and r.json()["links_imported"] == 0
        assert len((await c.get("/api/v1/events/export")).json()["events"]) == 4


async def test_import_is_all_or_nothing_and_bounded(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config={"events": {"import_max_bytes": 4096}}) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        good = {
            "id": 1,
            "source": "ics",
            "calendar_id": "w",
            "uid": "u1",
            "start_utc": "2030-01-01T10:00:00Z",
            "end_utc": "2030-01-01T11:00:00Z",
        }
        bad = {**good, "id": 2, "uid": "u2", "end_utc": "2029-01-01T00:00:00Z"}
        r = await c.post(
            "/api/v1/events/import", json={"format": "chronos-events", "version": 1, "events": [good, bad]}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"].startswith("/events/1")
        for field, value in [("end_utc", "9999-12-31T23:59:59-05:00"), ("start_utc", "0001-01-01T00:00:00+01:00")]:
            # a valid date-time that is out of range once in UTC
            far = {**good, "id": 2, "uid": "u2", field: value}
            r = await c.post(
                "/api/v1/events/import", json={"format": "chronos-events", "version": 1, "events": [good, far]}
            )
            assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text
            assert r.json()["errors"][0]["pointer"] == f"/events/1/{field}", r.json()
        dup = {**good, "id": 3}
        r = await c.post(
            "/api/v1/events/import", json={"format": "chronos-events", "version": 1, "events": [good, dup]}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/events/1/uid"
        r = await c.post("/api/v1/events/import", json={"format": "other", "version": 1, "events": []})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/format"
        r = await c.post("/api/v1/events/import", content=b"[1,", headers={"content-type": "application/json"})
        assert r.status_code == 400
        big = {
            "format": "chronos-events",
            "version": 1,
            "events": [{**good, "id": i, "uid": f"u{i}"} for i in range(50)],
        }
        r = await c.post(
            "/api/v1/events/import", content=json.dumps(big).encode(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")
        assert (await c.get("/api/v1/events", params={"direction": "all"})).json()["items"] == []


async def test_ics_feeds_with_keys_and_tokens(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(
            app,
            [
                ev(
                    "m1",
                    NOW + timedelta(days=1),
                    title="Standup, daily; team",
                    description="line1\nline2",
                    tags=["work"],
                ),
                ev("m1", NOW + timedelta(days=2), recurrence_id="20300102T090000Z", title="Standup instance"),
                all_day("h", (NOW + timedelta(days=3)).date(), days=2, title="Holiday"),
                ev("p", NOW + timedelta(days=1), calendar="home", title="Private", transparency="free"),
                ev("old", NOW - timedelta(days=400), title="Too old"),
            ],
        )
        c = await api_client(app, scopes=["events.read", "events.write"])
        r = await c.get("/api/v1/calendars/work/feed.ics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/calendar")
        cal = icalendar.Calendar.from_ical(r.content)
        events = [comp for comp in cal.walk("VEVENT")]
        assert [str(e["SUMMARY"]) for e in events] == ["Standup, daily; team", "Standup instance", "Holiday"]
        uids = [str(e["UID"]) for e in events]
        assert len(set(uids)) == 3  # one per event and instance
        assert str(events[0]["DESCRIPTION"]) == "line1\nline2"
        assert events[0]["DTSTART"].dt.tzinfo is not None and events[0]["DTSTART"].dt.utcoffset() == timedelta(0)
        assert b"DTSTART:" in r.content and b"Z\r\n" in r.content
        holiday = events[2]
        assert holiday["DTSTART"].params.get("VALUE") == "DATE" and isinstance(holiday["DTSTART"].dt, date)
        assert (holiday["DTEND"].dt - holiday["DTSTART"].dt).days == 2
        # the UID is stable across requests
        again = icalendar.Calendar.from_ical((await c.get("/api/v1/calendars/work/feed.ics")).content)
        assert [str(e["UID"]) for e in again.walk("VEVENT")] == uids

        all_cal = icalendar.Calendar.from_ical((await c.get("/api/v1/calendars/feed.ics")).content)
        assert sorted(str(e["SUMMARY"]) for e in all_cal.walk("VEVENT")) == [
            "Holiday",
            "Private",
            "Standup instance",
            "Standup, daily; team",
        ]
        assert [str(e["TRANSP"]) for e in all_cal.walk("VEVENT") if str(e["SUMMARY"]) == "Private"] == ["TRANSPARENT"]

        # tokens: per calendar, shown once, stored hashed, revocable
        anon = await api_client(app, scopes=["events.write"])  # a key without events.read
        assert (await anon.get("/api/v1/calendars/work/feed.ics")).status_code == 403
        r = await c.post("/api/v1/calendars/work/feed-tokens", json={"name": "phone"})
        assert r.status_code == 201, r.text
        tok = r.json()
        assert tok["feed_url"].endswith(tok["token"])
        from sqlalchemy import select

        from chronos_events.models import FeedToken

        async with app.state.chronos.db.read() as s:
            stored = (await s.execute(select(FeedToken.token_hash))).scalars().all()
        assert tok["token"] not in stored and len(stored) == 1

        import httpx

        bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chronos.test")
        try:
            r = await bare.get("/api/v1/calendars/work/feed.ics", params={"token": tok["token"]})
            assert r.status_code == 200 and len(icalendar.Calendar.from_ical(r.content).walk("VEVENT")) == 3
            assert (
                await bare.get("/api/v1/calendars/home/feed.ics", params={"token": tok["token"]})
            ).status_code == 401
            assert (await bare.get("/api/v1/calendars/feed.ics", params={"token": tok["token"]})).status_code == 401
            assert (
                await bare.get("/api/v1/calendars/work/feed.ics", params={"token": "cft_forged"})
            ).status_code == 401
            assert (await bare.get("/api/v1/calendars/work/feed.ics")).status_code == 401
            # an all-calendars token opens every feed
            all_tok = (await c.post("/api/v1/calendars/feed-tokens")).json()
            assert (await bare.get("/api/v1/calendars/feed.ics", params={"token": all_tok["token"]})).status_code == 200
            assert (
                await bare.get("/api/v1/calendars/home/feed.ics", params={"token": all_tok["token"]})
            ).status_code == 200

            listed = (await c.get("/api/v1/calendars/work/feed-tokens")).json()["items"]
            assert [t["id"] for t in listed] == [tok["id"]] and "token" not in listed[0]
            assert (await c.delete(f"/api/v1/calendars/work/feed-tokens/{tok['id']}")).status_code == 204
            assert (
                await bare.get("/api/v1/calendars/work/feed.ics", params={"token": tok["token"]})
            ).status_code == 401
            assert (await c.delete(f"/api/v1/calendars/home/feed-tokens/{tok['id']}")).status_code == 404
            reader = await api_client(app, scopes=["events.read"])
            assert (await reader.post("/api/v1/calendars/work/feed-tokens")).status_code == 403
        finally:
            await bare.aclose()


async def test_feed_of_a_calendar_with_a_non_latin_name(chronos_app, api_client):
    async with chronos_app(plugins=["events"]) as app:
        await apply(app, [ev("x", NOW + timedelta(days=1), calendar="\u00dd\U00103d86")])
        c = await api_client(app, scopes=["events.read"])
        r = await c.get("/api/v1/calendars/%C3%9D%F4%83%B6%86/feed.ics")
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"].startswith('inline; filename="__.ics"; filename*=UTF-8')
        assert r.text.startswith("BEGIN:VCALENDAR")
