"""Write-back: deleting an entry at the server with If-Match on the etag the last sync saw."""

from __future__ import annotations

import pytest

from caldav_support import LOOPBACK, PLUGINS, calendar_config, titles, vevent
from chronos import testing as kit
from chronos.plugin import EventIntake, SourceError

pytestmark = pytest.mark.exercises_hook("register_sources")


def intake(app) -> EventIntake:
    return kit.runtime_of(app).ctx.service(EventIntake)


def uids_at_server(cal) -> list[str]:
    return sorted(str(e.icalendar_component["UID"]) for e in cal.events())


async def test_a_writable_calendar_deletes_at_the_server(chronos_app, api_client, radicale, password_env):
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    cal.add_event(vevent("b@t", "Beta"))
    async with chronos_app(plugins=PLUGINS, config=calendar_config(cal, password_env, read_only=False)) as app:
        c = await api_client(app, scopes=["events.read"])
        await kit.sync_now(app, "caldav", "work")
        assert intake(app).deletes_at_source("caldav", "work")
        await intake(app).delete_at_source("caldav", "work", "a@t")
        assert uids_at_server(cal) == ["b@t"]
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.deleted) == ("ok", 1), run
        assert await titles(c) == ["Beta"]
        # Deleting what is already gone is not an error (a retry after a lost answer).
        await intake(app).delete_at_source("caldav", "work", "a@t")


async def test_an_entry_changed_since_the_last_sync_is_not_deleted(chronos_app, radicale, password_env):
    """412 Precondition Failed: someone edited the event after the sync; the delete names the reason."""
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    async with chronos_app(plugins=PLUGINS, config=calendar_config(cal, password_env, read_only=False)) as app:
        await kit.sync_now(app, "caldav", "work")
        cal.add_event(vevent("a@t", "Alpha, edited at the server"))
        with pytest.raises(SourceError, match=r"changed at http://127\.0\.0\.1:\d+ since the last sync \(HTTP 412"):
            await intake(app).delete_at_source("caldav", "work", "a@t")
        assert uids_at_server(cal) == ["a@t"]
        assert "edited" in str(cal.event_by_uid("a@t").icalendar_component["SUMMARY"])
        # After the next sync saw the edit, a delete goes through.
        await kit.sync_now(app, "caldav", "work")
        await intake(app).delete_at_source("caldav", "work", "a@t")
        assert uids_at_server(cal) == []


async def test_read_only_calendars_and_single_instances_are_never_deleted(chronos_app, radicale, password_env):
    cal = radicale.calendar()
    cal.add_event(vevent("w@t", "Weekly", extra="RRULE:FREQ=WEEKLY;COUNT=3"))
    config = calendar_config(cal, password_env)
    second = {**config["caldav"]["calendars"][0], "id": "rw", "read_only": False}
    config["caldav"]["calendars"].append(second)
    async with chronos_app(plugins=PLUGINS, config={**config, **LOOPBACK}) as app:
        await kit.sync_now(app, "caldav", "rw")
        assert not intake(app).deletes_at_source("caldav", "work")
        source = kit.runtime_of(app).pipeline.calendar("caldav", "work")
        with pytest.raises(SourceError, match="read-only"):
            await source.source.delete_entry(source.calendar, "w@t")
        rid = next(iter(await _rids(app, "rw")))
        with pytest.raises(SourceError, match="one instance of a recurring series"):
            await intake(app).delete_at_source("caldav", "rw", "w@t", rid)
        assert uids_at_server(cal) == ["w@t"]


async def _rids(app, calendar_id: str) -> set[str]:
    from chronos.plugin import EventStore

    ctx = kit.runtime_of(app).ctx
    async with ctx.db.read() as s:
        keys = await ctx.service(EventStore).keys(s, "caldav", calendar_id)
    return {k.recurrence_id for k in keys if k.recurrence_id}
