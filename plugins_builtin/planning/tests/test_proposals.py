"""Proposals: buffers at the edges of working hours, free/busy of every selected calendar, holidays,
notice, DST weeks in America/New_York and Europe/Berlin, explanations, bad input."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from planning_support import PLUGINS, config, create, z

MONDAY = datetime(2030, 3, 4, tzinfo=UTC)
H = timedelta(hours=1)
ALL_DAY = [{"start": "00:00", "end": "24:00"}]
EVERY_DAY = {d: ALL_DAY for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def at(day: datetime, clock: str) -> datetime:
    hours, minutes = map(int, clock.split(":"))
    return day + timedelta(hours=hours, minutes=minutes)


async def propose(c, **body):
    r = await c.post("/api/v1/plan/proposals", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def starts(body) -> list[datetime]:
    return [datetime.fromisoformat(i["start_utc"]) for i in body["items"]]


async def test_buffers_at_the_edges_of_working_hours(chronos_app, api_client):
    hours = {"timezone": "UTC", "buffer_before_minutes": 15, "buffer_after_minutes": 15}
    async with chronos_app(plugins=PLUGINS, config=config(working_hours=hours)) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        await create(c, "Standup", at(MONDAY, "09:00"), at(MONDAY, "09:30"))
        await create(c, "Wrap-up", at(MONDAY, "16:30"), at(MONDAY, "17:00"), calendar="home")
        window = {"from": z(MONDAY), "to": z(MONDAY + timedelta(days=1))}
        body = await propose(c, duration_minutes=60, window=window, calendars=["work", "home"], count=50)
        got = starts(body)
        expected = [at(MONDAY, "09:45") + i * timedelta(minutes=15) for i in range(23)]  # 09:45 … 15:15
        assert got == expected
        first, last = body["items"][0], body["items"][-1]
        assert first["rank"] == 1 and first["explanation"][0] == "after 'Standup' on work, which ends 09:30"
        assert last["end_utc"] == z(at(MONDAY, "16:15"))
        assert "before 'Wrap-up' on home, which starts 16:30" in last["explanation"]
        assert body["working_hours_from"] == "global" and body["timezone"] == "UTC"
        # only the calendars asked for count: without home the afternoon is free up to 17:00
        body = await propose(c, duration_minutes=60, window=window, calendars=["work"], count=50)
        assert starts(body)[-1] == at(MONDAY, "16:00")
        # the same request twice gives the same answer
        assert body == await propose(c, duration_minutes=60, window=window, calendars=["work"], count=50)


async def test_ranking_spreads_over_free_gaps_and_skips_holidays(chronos_app, api_client):
    hours = {"timezone": "UTC", "holidays_calendar": "holidays"}
    async with chronos_app(plugins=PLUGINS, config=config(working_hours=hours)) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        await create(c, "Public holiday", date(2030, 3, 4), date(2030, 3, 5), calendar="holidays")
        await create(c, "Workshop", at(MONDAY, "33:00"), at(MONDAY, "40:00"))  # Tuesday 09:00-16:00
        window = {"from": z(MONDAY), "to": z(MONDAY + timedelta(days=3))}
        body = await propose(c, duration_minutes=60, window=window, calendars=["work"], count=3)
        # Monday is a holiday; Tuesday's only gap comes first, then Wednesday's, then the rest by time
        assert starts(body) == [at(MONDAY, "40:00"), at(MONDAY, "57:00"), at(MONDAY, "57:15")]
        assert body["items"][0]["avoided"][0]["slot_is"] == "after"


async def test_minimum_notice(chronos_app, api_client):
    now = datetime.now(UTC)
    hours = {"timezone": "UTC", "weekly": EVERY_DAY, "min_notice_minutes": 600}
    async with chronos_app(plugins=PLUGINS, config=config(working_hours=hours)) as app:
        c = await api_client(app, scopes=["events.read"])
        window = {"from": z(now - H), "to": z(now + timedelta(days=2))}
        body = await propose(c, duration_minutes=30, window=window, calendars=["work"], count=1)
        [first] = starts(body)
        assert now + timedelta(minutes=600) <= first < now + timedelta(minutes=615)


async def test_hours_that_run_on_past_midnight_let_a_slot_span_it(chronos_app, api_client):
    # 24:00 of one day meets 00:00 of the next: one stretch of working time, not two
    hours = {"timezone": "UTC", "weekly": EVERY_DAY}
    async with chronos_app(plugins=PLUGINS, config=config(working_hours=hours)) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        await create(c, "Long day", at(MONDAY, "00:00"), at(MONDAY, "23:45"))
        window = {"from": z(MONDAY), "to": z(MONDAY + timedelta(days=2))}
        body = await propose(c, duration_minutes=30, window=window, calendars=["work"], count=1)
        assert starts(body) == [at(MONDAY, "23:45")]
        assert body["items"][0]["end_utc"] == z(at(MONDAY, "24:15"))
        # hours that stop at 23:00 do not run on: the first slot waits for the next day
        short = {d: [{"start": "00:00", "end": "23:00"}] for d in EVERY_DAY}
        body = await propose(
            c,
            duration_minutes=30,
            window=window,
            calendars=["work"],
            count=1,
            working_hours={"timezone": "UTC", "weekly": short},
        )
        assert starts(body) == [at(MONDAY, "24:00")]


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        ("America/New_York", date(2030, 3, 10), date(2030, 11, 3)),
        ("Europe/Berlin", date(2030, 3, 31), date(2030, 10, 27)),
    ],
)
async def test_dst_days_have_no_missing_and_no_repeated_local_slots(chronos_app, api_client, zone, spring, autumn):
    tz = ZoneInfo(zone)
    async with chronos_app(plugins=PLUGINS, config=config(max_proposals=200, slot_step_minutes=30)) as app:
        c = await api_client(app, scopes=["events.read"])
        for day, hours_that_day in ((spring, 23), (autumn, 25)):
            start = datetime.combine(day, time(), tz)
            end = datetime.combine(day + timedelta(days=1), time(), tz)
            override = {"timezone": zone, "weekly": EVERY_DAY}
            body = await propose(
                c,
                duration_minutes=30,
                window={"from": start.isoformat(), "to": end.isoformat()},
                calendars=["work"],
                working_hours=override,
                count=200,
            )
            assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=hours_that_day)
            local = [s.astimezone(tz) for s in starts(body)]
            walls = Counter((t.hour, t.minute) for t in local)
            assert max(walls.values()) == 1  # no wall time twice (the repeated hour once)
            assert len(local) == (46 if day == spring else 48), [t.isoformat() for t in local]
            if day == spring:
                assert not [t for t in local if t.hour == 2]  # the hour that does not exist
            for item in body["items"]:
                assert (
                    datetime.fromisoformat(item["local_start"]).utcoffset()
                    == datetime.fromisoformat(item["start_utc"]).astimezone(tz).utcoffset()
                )


@pytest.mark.parametrize(
    ("zone", "sunday"), [("America/New_York", date(2030, 3, 10)), ("Europe/Berlin", date(2030, 10, 27))]
)
async def test_working_hours_follow_local_time_across_a_dst_week(chronos_app, api_client, zone, sunday):
    tz = ZoneInfo(zone)
    hours = {"timezone": zone}
    async with chronos_app(plugins=PLUGINS, config=config(working_hours=hours, max_proposals=100)) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        friday = sunday - timedelta(days=2)
        monday = sunday + timedelta(days=1)
        # a meeting 09:00-12:00 local on both sides of the change
        for d in (friday, monday):
            await create(c, "Morning", datetime.combine(d, time(9), tz), datetime.combine(d, time(12), tz))
        window = {
            "from": datetime.combine(friday, time(), tz).isoformat(),
            "to": datetime.combine(monday + timedelta(days=1), time(), tz).isoformat(),
        }
        body = await propose(c, duration_minutes=60, window=window, calendars=["work"], count=60)
        local = [s.astimezone(tz) for s in starts(body)]
        assert local and all(time(12) <= t.time() <= time(16) for t in local)
        assert {t.date() for t in local} == {friday, monday}
        assert sorted(t for t in local if t.date() == friday)[0].time() == time(12)
        assert sorted(t for t in local if t.date() == monday)[0].time() == time(12)
        assert body["items"][0]["explanation"][0] == "after 'Morning' on work, which ends 12:00"


async def test_bad_input_names_the_field(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config=config()) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        # an auto-plan event whose end is before its start never reaches planning
        r = await c.post(
            "/api/v1/events",
            json={"title": "Backwards", "start": z(MONDAY + H), "end": z(MONDAY), "mode": "auto-plan"},
        )
        assert r.status_code == 422 and [e["pointer"] for e in r.json()["errors"]] == ["/end"]
        window = {"from": z(MONDAY), "to": z(MONDAY + timedelta(days=1))}
        good = {"duration_minutes": 30, "window": window, "calendars": ["work"]}
        cases = [
            ({"duration_minutes": 0}, "/duration_minutes"),
            ({"duration_minutes": -30}, "/duration_minutes"),
            ({"duration_minutes": 2000}, "/duration_minutes"),
            ({"window": {"from": z(MONDAY), "to": z(MONDAY + timedelta(days=3650))}}, "/window/to"),
            ({"window": {"from": z(MONDAY), "to": z(MONDAY - H)}}, "/window/to"),
            ({"calendars": ["work", "nowhere"]}, "/calendars/1"),
            (
                {"working_hours": {"weekly": {"mon": [{"start": "17:00", "end": "09:00"}]}}},
                "/working_hours/weekly/mon/0",
            ),
            ({"working_hours": {"timezone": "Mars/Olympus"}}, "/working_hours/timezone"),
            ({"count": 1000}, "/count"),
        ]
        for change, pointer in cases:
            r = await c.post("/api/v1/plan/proposals", json=good | change)
            assert r.status_code == 422, (change, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            pointers = [e["pointer"] for e in r.json()["errors"]]
            assert any(p == pointer or p.startswith(pointer + "/") or p == "/body" + pointer for p in pointers), (
                change,
                pointers,
            )


def test_the_event_just_before_a_slot_is_the_one_ending_last():
    """The explanation's neighbour search, against the plain rule over random busy times: the
    latest end at or before the slot (ties: the higher id), within a day of it."""
    import bisect
    import random

    from chronos_planning.proposals import _last_before
    from chronos_planning.rules import Busy

    rng = random.Random(11)
    for _ in range(300):
        busy = []
        for i in range(rng.randrange(0, 40)):
            start = MONDAY + timedelta(minutes=15 * rng.randrange(0, 4 * 72))
            busy.append(Busy(i, "work", start, start + timedelta(minutes=15 * rng.randrange(1, 40)), None))
        begins = sorted(busy, key=lambda b: (b.start, b.id))
        keys = [b.start for b in begins]
        reach = max((b.end - b.start for b in begins), default=timedelta(0))
        at_ = MONDAY + timedelta(minutes=15 * rng.randrange(0, 4 * 80))
        ends = sorted(busy, key=lambda b: (b.end, b.id))
        i = bisect.bisect_right([b.end for b in ends], at_) - 1
        expected = ends[i] if i >= 0 and ends[i].end >= at_ - timedelta(hours=26) else None
        assert _last_before(begins, keys, reach, at_) == expected


async def test_only_what_blocks_keeps_slots_away(chronos_app, api_client):
    """Proposals take each calendar's policy: events of a calendar that does not count for conflicts,
    all-day events of a calendar whose all-day events do not block, free (transparent) and cancelled
    events leave their time free; an all-day event of a calendar whose all-day events block takes the day."""
    hours = {"timezone": "UTC"}
    policies = {"home": {"counts_for_conflicts": False}, "gym": {"all_day_blocks": True}}
    async with chronos_app(plugins=PLUGINS, config=config(working_hours=hours, calendars=policies)) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        await create(c, "Errands", at(MONDAY, "09:00"), at(MONDAY, "17:00"), calendar="home")
        await create(c, "Offsite", date(2030, 3, 4), date(2030, 3, 5), calendar="work")
        await create(c, "Reading", at(MONDAY, "09:00"), at(MONDAY, "12:00"), transparency="free")
        await create(c, "Called off", at(MONDAY, "12:00"), at(MONDAY, "17:00"), status="cancelled")
        await create(c, "Retreat", date(2030, 3, 5), date(2030, 3, 6), calendar="gym")
        await create(c, "Review", at(MONDAY, "57:00"), at(MONDAY, "58:00"))  # Wednesday 09:00-10:00
        window = {"from": z(MONDAY), "to": z(MONDAY + timedelta(days=3))}
        body = await propose(c, duration_minutes=60, window=window, calendars=["work", "home", "gym"], count=3)
        # Monday is all free; Tuesday is taken by the gym's retreat; Wednesday's first slot follows Review
        assert starts(body) == [at(MONDAY, "09:00"), at(MONDAY, "58:00"), at(MONDAY, "09:15")]
        assert body["items"][1]["explanation"][0] == "after 'Review' on work, which ends 10:00"
        assert body["items"][1]["avoided"][0]["title"] == "Review"
