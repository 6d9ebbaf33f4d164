"""GET /api/v1/events: windows, direction, cursors, filters, analytics, errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from chronos.plugin import encode_cursor
from events_support import T0, all_day, apply, ev, z

from chronos_events.query import EventQuery

PLUGINS = ["events"]
H = timedelta(hours=1)


async def _ids(c, **params):
    r = await c.get("/api/v1/events", params=params)
    assert r.status_code == 200, r.text
    return [i["uid"] for i in r.json()["items"]]


async def test_window_overlap_edges_and_long_events(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        frm, to = T0, T0 + 2 * H
        await apply(
            app,
            [
                ev("ends-at-from", T0 - H, 60),  # [8,9): excluded (end is exclusive)
                ev("starts-at-to", T0 + 2 * H, 30),  # [11,...): excluded
                ev("inside", T0 + H, 30),
                ev("spans", T0 - H, 240),  # covers the whole window
                ev("week-long", T0 - timedelta(days=5), 60 * 24 * 6),  # started 5 days before, still running
                ev("long-ago", T0 - timedelta(days=20), 60 * 24 * 2),
                ev("zero", T0, 0),  # an instant at `from`: [9,9) overlaps nothing
                ev("other-cal", T0 + H, 30, calendar="home"),
            ],
        )
        c = await api_client(app, scopes=["events.read"])
        got = await _ids(c, **{"from": z(frm), "to": z(to)})
        assert got == ["week-long", "spans", "inside", "other-cal"]
        got = await _ids(c, **{"from": z(frm), "to": z(to), "calendar_id": "work"})
        assert got == ["week-long", "spans", "inside"]
        got = await _ids(c, **{"from": z(frm), "to": z(to), "calendar_id": ["work", "home"]})
        assert got == ["week-long", "spans", "inside", "other-cal"]
        # an offset other than Z means the same instant
        got = await _ids(
            c, **{"from": "2030-03-04T10:00:00+01:00", "to": "2030-03-04T13:00:00+02:00", "calendar_id": "work"}
        )
        assert got == ["week-long", "spans", "inside"]


async def test_all_day_events(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, [all_day("holiday", date(2030, 3, 4)), all_day("trip", date(2030, 3, 1), days=3)])
        c = await api_client(app, scopes=["events.read"])
        r = await c.get("/api/v1/events", params={"from": "2030-03-04T00:00:00Z", "to": "2030-03-05T00:00:00Z"})
        items = r.json()["items"]
        assert [i["uid"] for i in items] == ["holiday"]  # the trip ends (exclusive) on the 4th at 00:00
        assert items[0]["all_day"] is True
        assert (items[0]["start_date"], items[0]["end_date"]) == ("2030-03-04", "2030-03-05")
        assert (items[0]["start_utc"], items[0]["end_utc"]) == ("2030-03-04T00:00:00Z", "2030-03-05T00:00:00Z")


async def test_direction_future_past_all(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, [ev(f"e{i}", T0 + i * H, 30) for i in range(-3, 4)] + [ev("running", T0 - 2 * H, 180)])
        c = await api_client(app, scopes=["events.read"])
        # future relative to `from`: not yet ended at T0, ascending
        assert await _ids(c, direction="future", **{"from": z(T0)}) == ["running", "e0", "e1", "e2", "e3"]
        # past relative to `from`: started before T0, newest first
        assert await _ids(c, direction="past", **{"from": z(T0)}) == ["e-1", "running", "e-2", "e-3"]
        # past with a window: the window, descending
        assert await _ids(c, direction="past", **{"from": z(T0 - H), "to": z(T0 + 2 * H)}) == [
            "e1",
            "e0",
            "e-1",
            "running",
        ]
        assert await _ids(c, direction="all") == ["e-3", "e-2", "running", "e-1", "e0", "e1", "e2", "e3"]
        # relative to now (2030 is in the future): everything is future, nothing past
        assert len(await _ids(c)) == 8
        assert await _ids(c, direction="past") == []


async def test_keyset_cursor_is_stable_under_inserts(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        # equal start times exercise the id tie-breaker
        await apply(app, [ev(f"s{i:02d}", T0 + (i // 3) * H) for i in range(12)])
        c = await api_client(app, scopes=["events.read"])
        params = {"from": z(T0 - H), "to": z(T0 + 10 * H), "limit": 5}
        r = await c.get("/api/v1/events", params=params)
        page1 = r.json()
        assert len(page1["items"]) == 5 and page1["next_cursor"]
        # rows inserted before and after the cursor position do not shift the next page
        await apply(app, [ev("early", T0 - timedelta(minutes=30)), ev("late", T0 + 9 * H)])
        seen = [i["uid"] for i in page1["items"]]
        cursor = page1["next_cursor"]
        while cursor:
            r = await c.get("/api/v1/events", params={**params, "cursor": cursor})
            assert r.status_code == 200, r.text
            seen += [i["uid"] for i in r.json()["items"]]
            cursor = r.json()["next_cursor"]
        assert seen == [f"s{i:02d}" for i in range(12)] + ["late"]
        assert len(set(seen)) == len(seen)

        # descending pages for past
        got, cursor = [], None
        while True:
            p = {"direction": "past", "from": z(T0 + 10 * H), "limit": 4} | ({"cursor": cursor} if cursor else {})
            body = (await c.get("/api/v1/events", params=p)).json()
            got += [i["uid"] for i in body["items"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert got == ["late"] + [f"s{i:02d}" for i in reversed(range(12))] + ["early"]

        # a cursor from another filter, or a forged one, is a 400 problem
        other = await c.get("/api/v1/events", params={**params, "cursor": page1["next_cursor"], "calendar_id": "x"})
        assert other.status_code == 400 and other.headers["content-type"].startswith("application/problem+json")
        for forged in (
            "garbage",
            "eyJrIjoiZXZlbnRzIiwidiI6WzEsMiwzXX0",
            "eyJrIjoiZXZlbnRzIiwidiI6WyJhbGwiLCJub3QgYSBkYXRlIiwxLCJ4Il19",
        ):
            r = await c.get("/api/v1/events", params={**params, "cursor": forged})
            assert r.status_code == 400, (forged, r.text)
        # forged with the right filter fingerprint: ids beyond BIGINT, instants beyond UTC's range
        fingerprint = EventQuery(start=T0 - H, end=T0 + 10 * H).fingerprint()
        for start, event_id in [
            (z(T0), 2**70),
            (z(T0), -(2**70)),
            ("0001-01-01T00:00:00+01:00", 1),
            ("9999-12-31T23:59:59-05:00", 1),
            ("2030-03-04T09:00:00", 1),
        ]:
            forged = encode_cursor("events", ["all", start, event_id, fingerprint])
            for extra in ({}, {"analytics": "true"}):
                r = await c.get("/api/v1/events", params={**params, **extra, "cursor": forged})
                assert r.status_code == 400, (start, event_id, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["type"].endswith("invalid-cursor")


async def test_filters_tags_completed_and_text(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        done = [{"id": "1", "text": "a", "done": True}]
        open_ = [{"id": "1", "text": "a", "done": False}]
        await apply(
            app,
            [
                ev("q", T0, title="Quarterly planning review", description="Budget for the next year", tags=["work"]),
                ev(
                    "d",
                    T0 + H,
                    title="Dentist",
                    location="Dr. Weber, Main street",
                    tags=["health", "private"],
                    sub_tasks=done,
                ),
                ev("p", T0 + 2 * H, title="Plan the offsite", description="two words together", sub_tasks=open_),
                ev("w", T0 + 3 * H, title="Words two", description="words, two"),
            ],
        )
        c = await api_client(app, scopes=["events.read"])
        w = {"from": z(T0 - H), "to": z(T0 + 5 * H)}
        assert await _ids(c, **w, tag="health") == ["d"]
        assert await _ids(c, **w, tag=["health", "private"]) == ["d"]
        assert await _ids(c, **w, tag=["health", "work"]) == []
        assert await _ids(c, **w, include_completed="false") == ["q", "p", "w"]
        assert await _ids(c, **w, text="plan*") == ["q", "p"]  # prefix
        assert await _ids(c, **w, text="PLANNING") == ["q"]  # case-insensitive, no prefix
        assert await _ids(c, **w, text="weber") == ["d"]  # location is searched
        assert await _ids(c, **w, text="budget year") == ["q"]  # all terms, any order
        assert await _ids(c, **w, text='"two words"') == ["p"]  # phrase
        assert await _ids(c, **w, text="two words") == ["p", "w"]
        assert await _ids(c, **w, text='"words two"') == ["w"]
        for garbage in [
            '"',
            '""',
            "*",
            "AND OR NOT",
            '" * ( ) : ^ - + NEAR(',
            "'; DROP TABLE events; --",
            "\\",
            "a:b",
            "(((",
            "-x",
            "NOT",
        ]:
            r = await c.get("/api/v1/events", params={**w, "text": garbage})
            assert r.status_code == 200, (garbage, r.text)
        assert await _ids(c, **w, text='"') == []
        assert await _ids(c, **w, text="NOT") == []  # a word, not an operator
        assert await _ids(c, **w, text="   ") == ["q", "d", "p", "w"]


async def test_analytics_over_the_whole_filtered_set(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(
            app,
            [
                ev("a", T0 + 2 * H, 60, tags=["x"]),
                ev("b", T0 + timedelta(minutes=150), 60, tags=["x", "y"]),  # overlaps a: union 90 min
                ev("c", T0 + timedelta(days=1), 45, calendar="home"),
                ev("free", T0 + timedelta(days=1), 600, transparency="free"),
                ev("gone", T0 + timedelta(days=1), 600, status="cancelled"),
                ev("edge", T0 - timedelta(minutes=30), 60, calendar="home"),  # clipped to 30 min inside the window
            ],
        )
        c = await api_client(app, scopes=["events.read"])
        r = await c.get(
            "/api/v1/events", params={"from": z(T0), "to": z(T0 + timedelta(days=2)), "analytics": "true", "limit": 1}
        )
        body = r.json()
        assert len(body["items"]) == 1 and body["next_cursor"]
        a = body["analytics"]
        assert a["total"] == 6
        assert a["per_calendar"] == {"home": 2, "work": 4}
        assert a["per_day"] == {"2030-03-04": 3, "2030-03-05": 3}
        assert a["per_tag"] == {"x": 2, "y": 1}
        assert a["busy_minutes"] == 90 + 45 + 30
        r = await c.get(
            "/api/v1/events", params={"from": z(T0), "to": z(T0 + timedelta(days=2)), "analytics": "true", "text": "#"}
        )
        assert r.json()["analytics"]["total"] == 0 and r.json()["items"] == []


async def test_client_errors_are_problems(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        c = await api_client(app, scopes=["events.read"])
        cases = [
            ({"from": z(T0 + H), "to": z(T0)}, 422, "/query/from"),
            ({"from": "yesterday"}, 422, "/query/from"),
            ({"to": "2030-13-45T00:00:00Z"}, 422, "/query/to"),
            ({"from": "2030-03-04T09:00:00"}, 422, "/query/from"),  # naive: no offset
            ({"limit": 0}, 422, "/query/limit"),
            ({"limit": 501}, 422, "/query/limit"),
            ({"limit": "many"}, 422, "/query/limit"),
            ({"direction": "sideways"}, 422, "/query/direction"),
            ({"cursor": "%%%"}, 400, None),
            # valid date-times whose UTC instant is outside datetime's years 1 to 9999
            ({"from": "0001-01-01T00:00:00+01:00"}, 422, "/query/from"),
            ({"from": z(T0), "to": "9999-12-31T23:59:59-01:00"}, 422, "/query/to"),
            ({"from": "0001-01-01T00:00:00+01:00", "analytics": "true"}, 422, "/query/from"),
        ]
        for params, status, pointer in cases:
            r = await c.get("/api/v1/events", params=params)
            assert r.status_code == status, (params, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            if pointer:
                assert pointer in [e["pointer"] for e in r.json()["errors"]], r.json()
        r = await c.get("/api/v1/events/999999")
        assert r.status_code == 404 and r.json()["type"].endswith("not-found")
        r = await c.get("/api/v1/events/99999999999999999999999")
        assert r.status_code == 422
        r = await c.get("/api/v1/events", params={"calendar_id": "x" * 201})
        assert r.status_code == 422
        anon = await c.get("/api/v1/events", headers={"Authorization": ""})
        assert anon.status_code == 401
        w = await api_client(app, scopes=["events.write"])
        assert (await w.get("/api/v1/events")).status_code == 403


async def test_windows_reach_from_year_one_to_year_9999(chronos_app, api_client):
    """The extreme ends of the range answer alike on both databases (years below 1000 included)."""
    # Analytics over ten thousand years: allowed only when configured.
    async with chronos_app(plugins=PLUGINS, config={"events": {"query_max_window_days": 3_660_000}}) as app:
        await apply(
            app,
            [
                ev("first", datetime(1, 1, 1, 1, tzinfo=UTC)),
                ev("antique", datetime(500, 6, 1, tzinfo=UTC)),
                ev("now", T0),
                ev("last", datetime(9999, 12, 31, 22, tzinfo=UTC)),
            ],
        )
        c = await api_client(app, scopes=["events.read"])
        everything = {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"}
        for extra in ({}, {"analytics": "true"}):
            got, cursor = [], None
            while True:
                r = await c.get(
                    "/api/v1/events",
                    params={**everything, **extra, "limit": 1} | ({"cursor": cursor} if cursor else {}),
                )
                assert r.status_code == 200, r.text
                got += [(i["uid"], i["start_utc"]) for i in r.json()["items"]]
                cursor = r.json()["next_cursor"]
                if not cursor:
                    break
            assert got == [
                ("first", "0001-01-01T01:00:00Z"),
                ("antique", "0500-06-01T00:00:00Z"),
                ("now", z(T0)),
                ("last", "9999-12-31T22:00:00Z"),
            ], extra
        assert await _ids(c, **{"from": "0400-01-01T00:00:00Z", "to": "0600-01-01T00:00:00Z"}) == ["antique"]
        assert await _ids(c, direction="past", **{"from": "0500-06-01T01:00:00+00:30"}) == ["antique", "first"]
        r = await c.get("/api/v1/events", params={**everything, "analytics": "true"})
        assert r.json()["analytics"]["per_day"] == {"0001-01-01": 1, "0500-06-01": 1, "2030-03-04": 1, "9999-12-31": 1}
        one = (await c.get(f"/api/v1/events/{r.json()['items'][0]['id']}")).json()
        assert (one["start_utc"], one["end_utc"]) == ("0001-01-01T01:00:00Z", "0001-01-01T02:00:00Z")


async def test_inline_reads_fall_back_to_the_thread_pool(chronos_app, api_client, database):
    """A page that outlives the inline budget is re-run in a thread, with the same answer."""
    expected = None
    for budget in (8.0, 0.000001, 0):
        async with chronos_app(plugins=PLUGINS, config={"events": {"inline_read_budget_ms": budget}}) as app:
            if expected is None:
                await apply(
                    app,
                    [
                        ev(f"f{i:03d}", T0 + timedelta(minutes=7 * i), calendar=f"c{i % 4}", tags=["t"])
                        for i in range(300)
                    ],
                )
            c = await api_client(app, scopes=["events.read"])
            pages, cursor = [], None
            while True:
                params = {"from": z(T0), "to": z(T0 + timedelta(days=2)), "limit": 40, "tag": "t"}
                r = await c.get("/api/v1/events", params=params | ({"cursor": cursor} if cursor else {}))
                assert r.status_code == 200, r.text
                pages += [i["uid"] for i in r.json()["items"]]
                cursor = r.json()["next_cursor"]
                if not cursor:
                    break
            from chronos_events.state import INLINE_READER

            reader = app.state.chronos.resource(INLINE_READER)
            if database.backend == "sqlite" and budget == 8.0:
                assert reader is not None and reader.fallbacks == 0, reader.last_error
            if database.backend == "sqlite" and budget == 0.000001:
                assert reader is not None and reader.fallbacks > 0
            if budget == 0:
                assert reader is None
        expected = expected or pages
        assert pages == expected and len(pages) == 300


async def test_list_items_equal_single_event_items(chronos_app, api_client):
    """The list (item JSON built by SQLite on SQLite) and GET /events/{id} (built in Python) agree exactly."""
    async with chronos_app(plugins=PLUGINS) as app:
        tricky = ev(
            'u"1',
            T0 + timedelta(microseconds=123400),
            61.5,
            title='Quote " backslash \\ ünï ✓ \n line',
            description="tab\there",
            tags=["a", "ß"],
            metadata={"n": 1.5, "x": [None, True]},
            sub_tasks=[{"id": "1", "text": "t", "done": True}],
            timezone="Europe/Berlin",
            status="tentative",
            transparency="free",
            mode="auto-plan",
        )
        await apply(app, [tricky, all_day("day", date(2030, 3, 4), days=2)])
        c = await api_client(app, scopes=["events.read"])
        items = (await c.get("/api/v1/events", params={"from": z(T0 - H), "to": z(T0 + H)})).json()["items"]
        assert len(items) == 2
        for item in items:
            assert item == (await c.get(f"/api/v1/events/{item['id']}")).json()
        assert items[1]["start_utc"] == "2030-03-04T09:00:00.1234Z" and items[1]["all_done"] is True
