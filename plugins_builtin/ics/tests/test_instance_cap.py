"""ics.max_instances_per_calendar: a calendar over it syncs its first instances in time order and says so."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from chronos import testing as kit

pytestmark = pytest.mark.exercises_hook("register_sources")

PLUGINS = ["events", "normalize", "ics"]


def calendar() -> bytes:
    start = date.today() + timedelta(days=1)
    late = (start + timedelta(days=100)).strftime("%Y%m%d")
    singles = "".join(
        f"BEGIN:VEVENT\r\nUID:late-{i}@test\r\nDTSTART:{late}T1{i}0000Z\r\nDTEND:{late}T1{i}3000Z\r\n"
        f"SUMMARY:Late {i}\r\nEND:VEVENT\r\n"
        for i in range(3)
    )
    series = (
        "BEGIN:VEVENT\r\nUID:daily@test\r\n"
        f"DTSTART:{start.strftime('%Y%m%d')}T090000Z\r\nDTEND:{start.strftime('%Y%m%d')}T093000Z\r\n"
        "RRULE:FREQ=DAILY;COUNT=20\r\nSUMMARY:Daily\r\nEND:VEVENT\r\n"
    )
    # The late single events come first in the file: they are sent before the cap is reached.
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n" + singles + series + "END:VCALENDAR\r\n"
    ).encode()


async def test_a_calendar_over_the_cap_syncs_its_first_instances_in_time_order(chronos_app, api_client, tmp_path):
    path = tmp_path / "busy.ics"
    path.write_bytes(calendar())
    config = {
        "ics": {
            "calendars": [{"id": "busy", "path": str(path)}],
            "parse_workers": 0,
            "batch_size": 2,
            "max_instances_per_calendar": 10,
        }
    }
    async with chronos_app(plugins=PLUGINS, config=config) as app:
        run = await kit.sync_now(app, "ics", "busy")
        assert run.status == "partial", run
        messages = [e["message"] for e in run.errors]
        assert any("max_instances_per_calendar (10)" in m and "first 10 in time order" in m for m in messages), run
        c = await api_client(app, scopes=["events.read"])
        r = await c.get("/api/v1/calendars")
        [busy] = [i for i in r.json()["items"] if i["id"] == "busy"]
        assert busy["event_count"] == 10
        r = await c.get("/api/v1/events", params={"calendar_id": "busy", "direction": "future", "limit": 100})
        titles = [i["title"] for i in r.json()["items"]]
        assert titles == ["Daily"] * 10
        # a second sync keeps the same first ten
        await kit.sync_now(app, "ics", "busy", full=True)
        r = await c.get("/api/v1/events", params={"calendar_id": "busy", "direction": "future", "limit": 100})
        assert [i["title"] for i in r.json()["items"]] == ["Daily"] * 10
