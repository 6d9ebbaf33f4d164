"""An ICS calendar synced and served again as a feed: same occurrences, same zones, as instances or as a series."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import icalendar
import pytest
import recurring_ical_events

from chronos import testing as kit

pytestmark = pytest.mark.exercises_hook("register_sources")

PLUGINS = ["events", "normalize", "ics"]


def source_calendar() -> bytes:
    """A weekly series in Berlin (one date excluded, one instance moved) and a single event in New York."""
    monday = date.today() + timedelta(days=7 - date.today().weekday())
    day = lambda n: (monday + timedelta(weeks=n)).strftime("%Y%m%d")  # noqa: E731
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        "BEGIN:VEVENT\r\nUID:weekly@test\r\n"
        f"DTSTART;TZID=Europe/Berlin:{day(0)}T090000\r\nDTEND;TZID=Europe/Berlin:{day(0)}T100000\r\n"
        "RRULE:FREQ=WEEKLY;COUNT=30\r\n"
        f"EXDATE;TZID=Europe/Berlin:{day(2)}T090000\r\n"
        "SUMMARY:Weekly\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:weekly@test\r\n"
        f"RECURRENCE-ID;TZID=Europe/Berlin:{day(3)}T090000\r\n"
        f"DTSTART;TZID=Europe/Berlin:{day(3)}T113000\r\nDTEND;TZID=Europe/Berlin:{day(3)}T123000\r\n"
        "SUMMARY:Weekly (moved)\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:single@test\r\n"
        f"DTSTART;TZID=America/New_York:{day(1)}T150000\r\nDTEND;TZID=America/New_York:{day(1)}T160000\r\n"
        "SUMMARY:Call\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n"
    ).encode()


def occurrences(data: bytes) -> list[tuple[str, str, str]]:
    cal = icalendar.Calendar.from_ical(data)
    lo, hi = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=300)
    out = []
    for occ in recurring_ical_events.of(cal).between(lo, hi):
        start = occ.decoded("DTSTART")
        out.append((start.isoformat(), getattr(start.tzinfo, "key", str(start.tzinfo)), str(occ["SUMMARY"])))
    return sorted(out)


async def test_the_feed_gives_back_the_source_occurrences_in_their_zones(chronos_app, api_client, tmp_path):
    path = tmp_path / "team.ics"
    path.write_bytes(source_calendar())
    config = {"ics": {"calendars": [{"id": "team", "path": str(path)}], "parse_workers": 0}}
    async with chronos_app(plugins=PLUGINS, config=config) as app:
        run = await kit.sync_now(app, "ics", "team")
        assert run.status == "ok", run
        c = await api_client(app, scopes=["events.read"])
        expected = occurrences(path.read_bytes())
        assert len(expected) == 30 and ("Weekly (moved)" in {e[2] for e in expected})
        assert {e[1] for e in expected} == {"Europe/Berlin", "America/New_York"}

        expanded = await c.get("/api/v1/calendars/team/feed.ics")
        assert expanded.status_code == 200, expanded.text
        assert occurrences(expanded.content) == expected
        assert b"BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin" in expanded.content and b"RRULE" not in expanded.content

        series = await c.get("/api/v1/calendars/team/feed.ics", params={"series": "true"})
        assert series.status_code == 200, series.text
        cal = icalendar.Calendar.from_ical(series.content)
        weekly = [e for e in cal.walk("VEVENT") if str(e["SUMMARY"]).startswith("Weekly")]
        assert len(weekly) == 2  # the master and the moved instance
        assert any("RRULE" in e for e in weekly) and any("RECURRENCE-ID" in e for e in weekly)
        assert occurrences(series.content) == expected

        # the per-feed default
    async with chronos_app(plugins=PLUGINS, config={**config, "events": {"feed_series": True}}) as app:
        c = await api_client(app, scopes=["events.read"])
        r = await c.get("/api/v1/calendars/team/feed.ics")
        assert b"RRULE:FREQ=WEEKLY;COUNT=30" in r.content and occurrences(r.content) == expected
        r = await c.get("/api/v1/calendars/team/feed.ics", params={"series": "false"})
        assert b"RRULE" not in r.content and occurrences(r.content) == expected


async def test_calendars_are_listed_and_unknown_feeds_are_404(chronos_app, api_client, tmp_path):
    path = tmp_path / "team.ics"
    path.write_bytes(source_calendar())
    config = {
        "ics": {
            "calendars": [{"id": "team", "path": str(path)}, {"id": "never", "path": str(path)}],
            "parse_workers": 0,
        }
    }
    async with chronos_app(plugins=PLUGINS, config=config) as app:
        await kit.sync_now(app, "ics", "team")
        c = await api_client(app, scopes=["events.read"])
        r = await c.get("/api/v1/calendars")
        assert r.status_code == 200, r.text
        by_id = {(i["source"], i["id"]): i for i in r.json()["items"]}
        team = by_id[("ics", "team")]
        assert team["read_only"] is True and team["configured"] is True and team["event_count"] == 30
        assert team["last_sync_status"] == "ok" and team["last_sync_at"].endswith("Z")
        assert team["feed_url"] == "/api/v1/calendars/team/feed.ics"
        never = by_id[("ics", "never")]
        assert never["event_count"] == 0 and never["last_sync_at"] is None
        assert by_id[("local", "local")]["read_only"] is False
        # a configured calendar without events has an (empty) feed; an unknown one is a 404 problem
        assert (await c.get("/api/v1/calendars/never/feed.ics")).status_code == 200
        r = await c.get("/api/v1/calendars/nope/feed.ics")
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
