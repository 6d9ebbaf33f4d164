"""Time allocation (tag, calendar, local weekday and hour across DST), the summary, the follow-up
labels, and the event list's analytics projection served by this plugin."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

PLUGINS = ["events", "analytics"]
BERLIN = ZoneInfo("Europe/Berlin")
H = timedelta(hours=1)


def z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def config(**analytics):
    return {"events": {"local_calendars": ["work", "home"]}, "analytics": analytics}


async def create(c, title, start, end, calendar="work", **fields):
    body = {"title": title, "calendar_id": calendar, "start": start.isoformat(), "end": end.isoformat(), **fields}
    r = await c.post("/api/v1/events", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def allocation(c, start, end, group_by, **params):
    r = await c.get(
        "/api/v1/analytics/time-allocation", params={"from": z(start), "to": z(end), "group_by": group_by, **params}
    )
    assert r.status_code == 200, r.text
    return {b["key"]: (b["minutes"], b["events"]) for b in r.json()["buckets"]}


async def test_time_allocation_by_calendar_and_tag(chronos_app, api_client):
    t = datetime(2030, 3, 4, 9, tzinfo=UTC)
    async with chronos_app(plugins=PLUGINS, config=config(followups={"enabled": False})) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        await create(c, "A", t, t + 2 * H, tags=["deep", "client"])
        await create(c, "B", t + H, t + 90 * timedelta(minutes=1), calendar="home", tags=["client"])
        await create(c, "C", t - H, t + H / 2)  # clipped by the window to 30 minutes
        await create(c, "D", t, t + H, transparency="free")
        await create(c, "E", t, t + H, status="cancelled")
        got = await allocation(c, t, t + timedelta(days=1), "calendar")
        assert got == {"home": (30.0, 1), "work": (150.0, 2)}
        got = await allocation(c, t, t + timedelta(days=1), "calendar", busy_only="false")
        assert got == {"home": (30.0, 1), "work": (210.0, 3)}
        got = await allocation(c, t, t + timedelta(days=1), "tag")
        assert got == {"client": (150.0, 2), "deep": (120.0, 1), None: (30.0, 1)}
        got = await allocation(c, t, t + timedelta(days=1), "calendar", calendar_id="home")
        assert got == {"home": (30.0, 1)}


async def test_hour_and_weekday_buckets_across_dst_in_berlin(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config=config(followups={"enabled": False})) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        # Spring: 01:00 to 04:00 local is two real hours (02:00-03:00 does not exist)
        spring = datetime(2030, 3, 31, 1, tzinfo=BERLIN)
        await create(c, "Night shift", spring, datetime(2030, 3, 31, 4, tzinfo=BERLIN))
        # Autumn: 00:30 to 03:30 local is four real hours (02:00-03:00 happens twice)
        autumn = datetime(2030, 10, 27, 0, 30, tzinfo=BERLIN)
        await create(c, "Long night", autumn, datetime(2030, 10, 27, 3, 30, tzinfo=BERLIN))
        # A Friday event across local midnight: half Friday, half Saturday
        friday = datetime(2030, 10, 25, 23, tzinfo=BERLIN)
        await create(c, "Late", friday, friday + 2 * H)

        hours = await allocation(c, spring - 2 * H, spring + 10 * H, "hour", timezone="Europe/Berlin")
        assert hours[1] == (60.0, 1) and hours[2] == (0.0, 0) and hours[3] == (60.0, 1)
        assert sum(m for m, _ in hours.values()) == 120.0
        hours = await allocation(c, autumn - 2 * H, autumn + 10 * H, "hour", timezone="Europe/Berlin")
        assert hours[0] == (30.0, 1) and hours[1] == (60.0, 1) and hours[2] == (120.0, 2) and hours[3] == (30.0, 1)
        # the same window in UTC buckets
        utc = await allocation(c, autumn - 2 * H, autumn + 10 * H, "hour", timezone="UTC")
        assert sum(m for m, _ in utc.values()) == 240.0 and utc[22] == (30.0, 1)

        week = await allocation(
            c,
            datetime(2030, 10, 21, tzinfo=BERLIN),
            datetime(2030, 10, 28, tzinfo=BERLIN),
            "weekday",
            timezone="Europe/Berlin",
        )
        assert week["fri"] == (60.0, 1) and week["sat"] == (60.0, 1) and week["sun"] == (240.0, 1)
        assert week["mon"] == (0.0, 0)


async def test_bad_input_names_the_parameter(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config=config()) as app:
        c = await api_client(app, scopes=["events.read"])
        t = datetime(2030, 3, 4, tzinfo=UTC)
        cases = [
            ({"from": z(t), "to": z(t - H)}, "/query/to"),
            ({"from": z(t), "to": z(t + timedelta(days=3650))}, "/query/to"),
            ({"timezone": "Mars/Olympus"}, "/query/timezone"),
            ({"from": "yesterday"}, "/query/from"),
        ]
        for params, pointer in cases:
            for path in ("/api/v1/analytics/time-allocation", "/api/v1/analytics/summary"):
                r = await c.get(path, params=params)
                assert r.status_code == 422, (path, params, r.text)
                assert r.json()["errors"][0]["pointer"] == pointer


async def test_summary_and_follow_up_labels(chronos_app, api_client):
    rules = {"enabled": True, "heavy_day_hours": 5, "chain_minutes": 120}
    plugins = [*PLUGINS, "normalize"]  # derives the checklists from the descriptions
    async with chronos_app(plugins=plugins, config=config(timezone="Europe/Berlin", followups=rules)) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        day = date(2030, 3, 5)  # a Tuesday

        def at(hour: float) -> datetime:
            return datetime(day.year, day.month, day.day, tzinfo=BERLIN) + timedelta(hours=hour)

        # 08:00-11:00 back to back in three events (a 3-hour chain), then 13:00-14:30 and 14:00-16:00 overlapping
        first = await create(c, "One", at(8), at(9), description="[x] agenda\n[ ] notes")
        await create(c, "Two", at(9), at(10))
        third = await create(c, "Three", at(10), at(11))
        await create(c, "Four", at(13), at(14.5), calendar="home", description="[x] a\n[x] b")
        fourth = await create(c, "Five", at(14), at(16))
        await create(c, "Quiet", at(20), at(21), transparency="free")
        # the third event closed the chain (3 h > 2 h) and the fifth made the day heavy (6 h > 5 h)
        assert "back-to-back" in third["tags"] and "back-to-back" not in first["tags"]
        assert "heavy-day" in fourth["tags"] and "heavy-day" not in third["tags"]

        params = {"from": z(at(-24 * 1)), "to": z(at(24 * 6))}
        r = await c.get("/api/v1/analytics/summary", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        tuesday = next(d for d in body["days"] if d["date"] == "2030-03-05")
        assert tuesday["busy_hours"] == 6.0
        # 00:00-08:00 and 16:00-24:00 are both 8 hours: the first one stays
        assert tuesday["longest_free_minutes"] == 480.0
        assert tuesday["longest_free"] == {"start": z(at(0)), "end": z(at(8))}
        assert body["busy_hours_per_week"] == [{"week_start": "2030-03-04", "busy_hours": 6.0}]
        assert body["back_to_back"]["chains"] == 2
        assert body["back_to_back"]["longest_minutes"] == 180.0
        assert body["checklists"] == {"items": 4, "done": 3, "completion_rate": 0.75}
        assert body["followups"]["heavy_days"] == ["2030-03-05"]
        assert [ch["minutes"] for ch in body["followups"]["long_chains"]] == [180.0, 180.0]


async def test_event_list_analytics_come_from_this_plugin(chronos_app, api_client):
    t = datetime(2030, 3, 4, 9, tzinfo=UTC)
    async with chronos_app(plugins=PLUGINS, config=config(followups={"enabled": False})) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        await create(c, "A", t, t + 2 * H, tags=["x"])
        await create(c, "B", t + H, t + 3 * H, calendar="home")
        await create(c, "C", t + timedelta(days=1), t + timedelta(days=1, hours=1), transparency="free", tags=["x"])
        params = {"from": z(t - H), "to": z(t + timedelta(days=2)), "analytics": "true"}
        r = await c.get("/api/v1/events", params=params)
        assert r.status_code == 200, r.text
        a = r.json()["analytics"]
        assert a["total"] == 3 and a["per_calendar"] == {"home": 1, "work": 2}
        assert a["per_day"] == {"2030-03-04": 2, "2030-03-05": 1} and a["per_tag"] == {"x": 2}
        assert a["busy_minutes"] == 180.0
        assert a["window"] == {"from": z(t - H), "to": z(t + timedelta(days=2))}
        alloc = await allocation(c, t - H, t + timedelta(days=2), "calendar")
        assert sum(m for m, _ in alloc.values()) == 240.0  # the sum counts the overlap twice, the union once
