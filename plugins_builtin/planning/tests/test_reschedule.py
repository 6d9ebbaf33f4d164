"""Auto-plan events in conflict get proposals; local ones move to one (audited), external ones never move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chronos import testing as kit
from chronos.plugin import CalendarSpec, EventDraft
from planning_support import PLUGINS, config, create, pairs, z

MONDAY = datetime(2030, 3, 4, tzinfo=UTC)
H = timedelta(hours=1)
WEEK = (MONDAY, MONDAY + timedelta(days=7))
HOURS = {"timezone": "UTC", "buffer_after_minutes": 15}


async def test_a_local_auto_plan_event_moves_to_a_proposal(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config=config(working_hours=HOURS)) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        busy = await create(c, "Standup", MONDAY + 9 * H, MONDAY + 10 * H, calendar="home")
        planned = await create(c, "Focus", MONDAY + 9 * H, MONDAY + 11 * H, mode="auto-plan", tags=["deep"])
        free = await create(c, "Free one", MONDAY + 12 * H, MONDAY + 13 * H)
        assert await pairs(c, *WEEK) == [(busy, planned, "auto-plan")]
        assert (await c.get(f"/api/v1/events/{free}/proposals")).json()["items"] == []

        offer = (await c.get(f"/api/v1/events/{planned}/proposals")).json()
        assert offer["movable"] is True and offer["mode"] == "auto-plan" and offer["conflicts"] == [busy]
        first = offer["items"][0]
        # 10:15 (the standup and its buffer) to 12:00 is too short for two hours; the free-mode event
        # still blocks its time, so the first slot follows it and its buffer
        assert first["start_utc"] == z(MONDAY + 13 * H + timedelta(minutes=15))
        assert first["explanation"][0] == "after 'Free one' on work, which ends 13:00"

        r = await c.post(f"/api/v1/events/{planned}/reschedule", json={"proposal": first["id"]})
        assert r.status_code == 200, r.text
        assert r.json()["previous"] == {"start": z(MONDAY + 9 * H), "end": z(MONDAY + 11 * H)}
        moved = (await c.get(f"/api/v1/events/{planned}")).json()
        assert (moved["start_utc"], moved["end_utc"]) == (first["start_utc"], first["end_utc"])
        assert moved["tags"] == ["deep"] and moved["mode"] == "auto-plan"
        assert await pairs(c, *WEEK) == []
        audit = [e for e in await kit.audit_entries(app, "event", planned) if e["action"] == "reschedule"]
        assert len(audit) == 1 and audit[0]["change"]["start_utc"] == first["start_utc"]
        # an offer that is no longer made is refused
        r = await c.post(f"/api/v1/events/{planned}/reschedule", json={"proposal": first["id"]})
        assert r.status_code == 409 and r.json()["type"].endswith("stale-proposal")


async def test_events_from_external_sources_get_proposals_but_never_move(chronos_app, api_client):
    source = kit.FakeSource([CalendarSpec("ext", read_only=True)])
    plugins = [*PLUGINS, kit.fake_source_plugin(source)]
    async with chronos_app(plugins=plugins, config=config(working_hours=HOURS)) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        start = MONDAY + 9 * H
        source.add(EventDraft(uid="x", start=start, end=start + H, title="Review", mode="auto-plan"), calendar="ext")
        await kit.sync_now(app, "fake", "ext")
        busy = await create(c, "Standup", start, start + H / 2)
        [(a, b, _)] = await pairs(c, *WEEK)
        external = a if a != busy else b
        offer = (await c.get(f"/api/v1/events/{external}/proposals")).json()
        assert offer["movable"] is False and offer["items"]
        r = await c.post(f"/api/v1/events/{external}/reschedule", json={"proposal": offer["items"][0]["id"]})
        assert r.status_code == 409 and r.json()["type"].endswith("not-movable")
        assert (await c.get(f"/api/v1/events/{external}")).json()["start_utc"] == z(start)
        assert (await c.get("/api/v1/events/999999/proposals")).status_code == 404


async def test_proposals_avoid_every_calendar_not_only_the_current_conflicts(chronos_app, api_client):
    """An auto-plan event conflicts with busy events of any calendar, so a slot it is offered (and moved to)
    must not clash with a calendar it does not conflict with yet."""
    async with chronos_app(plugins=PLUGINS, config=config(working_hours=HOURS)) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        await create(c, "Standup", MONDAY + 9 * H, MONDAY + 10 * H, calendar="home")
        later = await create(c, "Dentist", MONDAY + 10 * H, MONDAY + 12 * H, calendar="gym")
        planned = await create(c, "Focus", MONDAY + 9 * H, MONDAY + 10 * H, mode="auto-plan")
        offer = (await c.get(f"/api/v1/events/{planned}/proposals")).json()
        assert later not in offer["conflicts"] and offer["items"]
        for slot in offer["items"]:
            assert slot["start_utc"] >= z(MONDAY + 12 * H + timedelta(minutes=15)), slot
        r = await c.post(f"/api/v1/events/{planned}/reschedule", json={"proposal": offer["items"][0]["id"]})
        assert r.status_code == 200, r.text
        assert await pairs(c, *WEEK) == []
