"""Conflicts: auto-plan against anything busy, free mode, all-day blocking, per-calendar policies,
incremental upkeep through the pipeline, the window API and one notification per new pair."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from chronos import testing as kit
from chronos.plugin import CalendarSpec, EventDraft
from planning_support import PLUGINS, config, create, pairs, z

T = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
WEEK = (T - timedelta(days=1), T + timedelta(days=6))


async def test_auto_plan_conflicts_with_busy_events_of_any_mode(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config=config()) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        planned = await create(c, "Planned", T, T + 2 * H, mode="auto-plan")
        free = await create(c, "Free", T + H, T + 3 * H, calendar="home")
        await create(c, "Touching", T + 2 * H, T + 3 * H, mode="auto-plan")  # touches Planned's end only
        await create(c, "Transparent", T, T + H, transparency="free")
        await create(c, "Cancelled", T, T + H, status="cancelled")
        r = await c.get("/api/v1/conflicts", params={"from": z(WEEK[0]), "to": z(WEEK[1])})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        got = sorted((*i["event_ids"], i["reason"]) for i in items)
        touching = [i for i in items if "Touching" in {e["title"] for e in i["events"]}]
        # Touching conflicts with Free (both overlap 11:00-12:00), never with Planned.
        assert (planned, free, "auto-plan") in got
        assert all(planned not in i["event_ids"] for i in touching)
        first = next(i for i in items if i["event_ids"] == [planned, free])
        assert first["overlap"] == {"start": z(T + H), "end": z(T + 2 * H)}
        assert {e["title"] for e in first["events"]} == {"Planned", "Free"}
        assert len(got) == 2


async def test_two_free_events_overlap_unless_their_calendar_reports_all(chronos_app, api_client):
    cfg = config(calendars={"home": {"report_all_overlaps": True}})
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        await create(c, "A", T, T + H)
        await create(c, "B", T, T + H)
        assert await pairs(c, *WEEK) == []
        a = await create(c, "C", T + 5 * H, T + 6 * H)
        b = await create(c, "D", T + 5 * H, T + 7 * H, calendar="home")
        assert await pairs(c, *WEEK) == [(a, b, "all-overlaps")]


async def test_calendar_default_mode_and_counts_for_conflicts(chronos_app, api_client):
    cfg = config(calendars={"work": {"default_mode": "auto-plan"}, "home": {"counts_for_conflicts": False}})
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        a = await create(c, "Work", T, T + H)  # free by default, auto-plan through its calendar
        b = await create(c, "Other", T, T + H, calendar="holidays")
        await create(c, "Home", T, T + H, calendar="home", mode="auto-plan")  # never counts
        assert await pairs(c, *WEEK) == [(a, b, "auto-plan")]
        r = await c.get(f"/api/v1/events/{a}/proposals")
        assert r.json()["mode"] == "auto-plan" and r.json()["conflicts"] == [b]


async def test_all_day_events_block_only_where_their_calendar_says_so(chronos_app, api_client):
    cfg = config(calendars={"holidays": {"all_day_blocks": True}})
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        planned = await create(c, "Planned", T, T + H, mode="auto-plan")
        await create(c, "Offsite", date(2030, 3, 4), date(2030, 3, 5), calendar="home")
        holiday = await create(c, "Holiday", date(2030, 3, 4), date(2030, 3, 5), calendar="holidays")
        got = await pairs(c, *WEEK)
        assert got == [(planned, holiday, "auto-plan")]


async def test_a_pair_stops_conflicting_when_one_event_moves(chronos_app, api_client):
    source = kit.FakeSource([CalendarSpec("ext", read_only=True)])
    plugins = [*PLUGINS, kit.fake_source_plugin(source)]
    async with chronos_app(plugins=plugins, config=config()) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        source.add(EventDraft(uid="m1", start=T, end=T + H, title="Meeting", mode="auto-plan"), calendar="ext")
        source.add(EventDraft(uid="m2", start=T + H / 2, end=T + 2 * H, title="Call"), calendar="ext")
        run = await kit.sync_now(app, "fake", "ext")
        assert run.status == "ok", run
        [(a, b, reason)] = await pairs(c, *WEEK)
        assert reason == "auto-plan"
        # the call moves to the afternoon: the pair goes
        source.add(EventDraft(uid="m2", start=T + 5 * H, end=T + 6 * H, title="Call"), calendar="ext")
        await kit.sync_now(app, "fake", "ext")
        assert await pairs(c, *WEEK) == []
        # and back: a pair again; a deletion removes it
        source.add(EventDraft(uid="m2", start=T + H / 2, end=T + 2 * H, title="Call"), calendar="ext")
        await kit.sync_now(app, "fake", "ext")
        assert [p[:2] for p in await pairs(c, *WEEK)] == [(a, b)]
        source.remove("m2", calendar="ext")
        await kit.sync_now(app, "fake", "ext")
        assert await pairs(c, *WEEK) == []
        # a local delete through the API removes the pair too (the rows go with the event)
        other = await create(c, "Other", T, T + H)
        assert [p[:2] for p in await pairs(c, *WEEK)] == [(a, other)]
        assert (await c.delete(f"/api/v1/events/{other}")).status_code == 204
        assert await pairs(c, *WEEK) == []


async def test_window_calendar_filter_and_pages(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config=config()) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        ids = []
        for day in range(5):
            start = T + timedelta(days=day)
            a = await create(c, f"Planned {day}", start, start + H, mode="auto-plan")
            b = await create(c, f"Busy {day}", start, start + H, calendar="home" if day % 2 else "work")
            ids.append((a, b))
        seen, cursor = [], None
        while True:
            params = {"from": z(T), "to": z(T + timedelta(days=5)), "limit": 2}
            if cursor:
                params["cursor"] = cursor
            body = (await c.get("/api/v1/conflicts", params=params)).json()
            seen += [tuple(i["event_ids"]) for i in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == ids
        home = await pairs(c, T, T + timedelta(days=5), calendar_id="home")
        assert [p[:2] for p in home] == [ids[1], ids[3]]
        # a window that only touches the last overlap's end sees nothing of it
        assert await pairs(c, T + timedelta(days=4, hours=1), T + timedelta(days=6)) == []
        bad = [
            ({"from": z(T), "to": z(T - H)}, "/query/to"),
            ({"from": z(T), "to": z(T + timedelta(days=3650))}, "/query/to"),
            ({"from": "tomorrow"}, None),
            ({"cursor": "forged"}, None),
        ]
        for params, pointer in bad:
            r = await c.get("/api/v1/conflicts", params=params)
            assert r.status_code in (400, 422), (params, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            if pointer:
                assert [e["pointer"] for e in r.json()["errors"]] == [pointer]


async def test_event_list_includes_conflicting_ids(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config=config()) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        planned = await create(c, "Planned", T, T + 2 * H, mode="auto-plan")
        a = await create(c, "A", T, T + H, calendar="home")
        b = await create(c, "B", T + H, T + 3 * H, calendar="home")
        alone = await create(c, "Alone", T + 5 * H, T + 6 * H)
        params = {"from": z(WEEK[0]), "to": z(WEEK[1]), "include": "conflicts"}
        r = await c.get("/api/v1/events", params=params)
        assert r.status_code == 200, r.text
        got = {i["id"]: i["conflicts"] for i in r.json()["items"]}
        assert got == {planned: [a, b], a: [planned], b: [planned], alone: []}
        plain = (await c.get("/api/v1/events", params={"from": z(WEEK[0]), "to": z(WEEK[1])})).json()
        assert all("conflicts" not in i for i in plain["items"])
        r = await c.get("/api/v1/events", params={**params, "include": "everything"})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/query/include"


async def test_include_conflicts_without_planning_is_refused(chronos_app, api_client):
    async with chronos_app(plugins=["events"], config=config()) as app:
        c = await api_client(app, scopes=["events.read"])
        r = await c.get("/api/v1/events", params={"include": "conflicts"})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/query/include"


async def test_a_local_edit_moves_a_pair_in_and_out(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config=config()) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        planned = await create(c, "Planned", T, T + H, mode="auto-plan")
        other = await create(c, "Other", T + 3 * H, T + 4 * H, calendar="home")
        assert await pairs(c, *WEEK) == []
        r = await c.patch(f"/api/v1/events/{other}", json={"start_utc": z(T + H / 2), "end_utc": z(T + 2 * H)})
        assert r.status_code == 200, r.text
        assert await pairs(c, *WEEK) == [(planned, other, "auto-plan")]
        listed = await c.get("/api/v1/conflicts", params={"from": z(WEEK[0]), "to": z(WEEK[1])})
        assert listed.json()["items"][0]["overlap"] == {"start": z(T + H / 2), "end": z(T + H)}
        await c.patch(f"/api/v1/events/{other}", json={"start_utc": z(T + H), "end_utc": z(T + 2 * H)})
        assert await pairs(c, *WEEK) == []


async def test_an_event_opts_out_of_its_calendars_auto_plan_and_back(chronos_app, api_client):
    cfg = config(calendars={"work": {"default_mode": "auto-plan"}})
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        other = await create(c, "Other", T, T + H, calendar="home")
        free = await create(c, "Free", T, T + H, mode="free")  # says free: the calendar's default does not apply
        unset = await create(c, "Unset", T + 2 * H, T + 3 * H)
        assert (await c.get(f"/api/v1/events/{unset}")).json()["mode"] is None
        assert (await c.get(f"/api/v1/events/{free}/proposals")).json()["mode"] == "free"
        assert await pairs(c, *WEEK) == []
        # moved onto both, the unset one is planned through its calendar: it conflicts with each
        r = await c.patch(f"/api/v1/events/{unset}", json={"start_utc": z(T), "end_utc": z(T + H)})
        assert r.status_code == 200, r.text
        assert await pairs(c, *WEEK) == [(other, unset, "auto-plan"), (free, unset, "auto-plan")]
        # and opts out, then back to the calendar's default with null
        r = await c.patch(f"/api/v1/events/{unset}", json={"mode": "free"})
        assert r.status_code == 200 and r.json()["mode"] == "free", r.text
        assert await pairs(c, *WEEK) == []
        r = await c.patch(f"/api/v1/events/{free}", json={"mode": None})
        assert r.status_code == 200 and r.json()["mode"] is None, r.text
        assert await pairs(c, *WEEK) == [(other, free, "auto-plan"), (free, unset, "auto-plan")]
        bad = await c.patch(f"/api/v1/events/{free}", json={"mode": "sometimes"})
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")


async def test_a_free_event_moved_onto_a_planned_one_conflicts(chronos_app, api_client):
    source = kit.FakeSource([CalendarSpec("ext", read_only=True)])
    plugins = [*PLUGINS, kit.fake_source_plugin(source)]
    async with chronos_app(plugins=plugins, config=config()) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        planned = await create(c, "Planned", T, T + H, mode="auto-plan")
        # a synced batch of free events far from any planned one: no pair (and no candidate lookup)
        source.add(EventDraft(uid="f1", start=T + 30 * H, end=T + 31 * H, title="Far"), calendar="ext")
        assert (await kit.sync_now(app, "fake", "ext")).status == "ok"
        assert await pairs(c, *WEEK) == []
        # the same free event moved onto the planned one
        source.add(EventDraft(uid="f1", start=T + H / 2, end=T + 2 * H, title="Far"), calendar="ext")
        assert (await kit.sync_now(app, "fake", "ext")).status == "ok"
        [(a, b, reason)] = await pairs(c, *WEEK)
        assert a == planned and reason == "auto-plan"


def test_stored_sqlite_text_formats_like_the_instant():
    import random

    from chronos_planning.conflicts import _Sql, _text_z, iso_z

    rng = random.Random(5)
    sql = _Sql("sqlite")
    for _ in range(500):
        instant = T + timedelta(
            seconds=rng.randrange(-(10**8), 10**8), microseconds=rng.choice((0, rng.randrange(10**6)))
        )
        assert _text_z(sql.t(instant)) == iso_z(instant)
