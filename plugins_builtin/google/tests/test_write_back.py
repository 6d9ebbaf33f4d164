"""Consumed NOTIZ:/URL:/ACTION: entries are deleted in Google (events.delete) unless the calendar is read-only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from chronos import testing as kit
from google_support import Fault, config, events_of, soon, timed, weekly_instances

pytestmark = pytest.mark.exercises_hook("register_sources")

PLUGINS = ["events", "normalize", "commands", "google"]
WHITELIST = [{"system": "garden", "action": "WATER", "params": {"minutes": r"\d{1,3}"}, "schedule": "event_start"}]


def with_commands(cfg: dict) -> dict:
    return {**cfg, "commands": {"whitelist": WHITELIST}}


async def upkeep(app) -> dict:
    """Run the commands plugin's calendar upkeep job (consumption and deletions at sources) now."""
    return await kit.runtime_of(app).runner.run_now("commands.calendar")


def deletes(fake) -> list[str]:
    return [r["event"] for r in fake.requests if r["what"] == "delete"]


async def test_consumed_entries_are_deleted_at_google(chronos_app, api_client, fake_google, tmp_path):
    cal = "inbox@group.calendar.google.com"
    fake_google.put(cal, timed("note1", soon(1), summary="NOTIZ: call the plumber"))
    fake_google.put(cal, timed("link1", soon(1), summary="URL: https://example.org/runbook The runbook"))
    fake_google.put(cal, timed("plain", soon(2), summary="Dentist"))
    first = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), datetime.min.time()).replace(hour=8)
    weekly = weekly_instances("standup", first, 3, "Europe/Berlin", summary="NOTIZ: standup notes")
    fake_google.put_many(cal, weekly)
    cfg = with_commands(config(fake_google, tmp_path, {"id": "inbox", "read_only": False, "interval_seconds": 0}))
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        run = await sync_ok(app, "inbox")
        c = await api_client(app, scopes=["admin"])
        assert set(await events_of(c, "inbox")) == {("plain", "")}
        assert len((await c.get("/api/v1/notes")).json()["items"]) == 4
        result = await upkeep(app)
        assert result["deleted_at_source"] == 5, result
        assert sorted(deletes(fake_google)) == sorted(["note1", "link1", *(w["id"] for w in weekly)])
        assert {e["id"] for e in fake_google.calendars[cal].events.values() if e["status"] == "cancelled"} == {
            "note1",
            "link1",
            *(w["id"] for w in weekly),
        }
        # The cancelled stubs come back as deletions of entries already gone: nothing changes, nothing twice.
        run = await sync_ok(app, "inbox")
        assert (run.added, run.updated) == (0, 0)
        assert len((await c.get("/api/v1/notes")).json()["items"]) == 4
        assert set(await events_of(c, "inbox")) == {("plain", "")}


async def test_a_gone_entry_counts_as_deleted_and_failures_are_retried(chronos_app, api_client, fake_google, tmp_path):
    cal = "inbox2@group.calendar.google.com"
    fake_google.put(cal, timed("n1", soon(1), summary="NOTIZ: one"))
    fake_google.put(cal, timed("n2", soon(1), summary="NOTIZ: two"))
    cfg = config(fake_google, tmp_path, {"id": "inbox2", "read_only": False, "interval_seconds": 0}, max_retries=0)
    async with chronos_app(plugins=PLUGINS, config=with_commands(cfg)) as app:
        await sync_ok(app, "inbox2")
        fake_google.cancel(cal, "n1")  # deleted in Google meanwhile: 410 there
        fake_google.fail_next(Fault(500, path="delete", event="n2"))
        result = await upkeep(app)
        assert (result["deleted_at_source"], result["delete_failures"]) == (1, 1)
        # n1 answered 410 (done); n2 answered 500 once (max_retries=0) and stays queued for the next upkeep.
        assert sorted(deletes(fake_google)) == ["n1", "n2"]
        assert fake_google.calendars[cal].events["n2"]["status"] == "confirmed"


async def test_read_only_calendars_are_never_written(chronos_app, api_client, fake_google, tmp_path):
    cal = "ro@group.calendar.google.com"
    fake_google.put(cal, timed("n1", soon(1), summary="NOTIZ: stays in Google"))
    cfg = with_commands(config(fake_google, tmp_path, {"id": "ro", "interval_seconds": 0}))
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        await sync_ok(app, "ro")
        source = kit.runtime_of(app).pipeline.sources["google"][1]
        assert not source.can_delete(kit.runtime_of(app).pipeline.calendar("google", "ro").calendar)
        assert (await upkeep(app))["deleted_at_source"] == 0
        assert deletes(fake_google) == []
        c = await api_client(app, scopes=["events.read"])
        assert await events_of(c, "ro") == {}  # consumed locally: a tombstone keeps it hidden
        await sync_ok(app, "ro", full=True)
        assert await events_of(c, "ro") == {}


async def sync_ok(app, calendar_id: str, **kw):
    run = await kit.sync_now(app, "google", calendar_id, **kw)
    assert run.status == "ok", run.error
    return run


async def test_a_scheduled_entry_stays_until_its_command_is_handed_out(chronos_app, api_client, fake_google, tmp_path):
    cal = "garden@group.calendar.google.com"
    fake_google.calendar(cal)
    cfg = with_commands(config(fake_google, tmp_path, {"id": "garden", "read_only": False, "interval_seconds": 0}))
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
        fake_google.put(cal, timed("water", start, 10, summary="ACTION: WATER garden minutes=10"))
        await sync_ok(app, "garden")
        c = await api_client(app, scopes=["admin"])
        assert set(await events_of(c, "garden")) == {("water", "")}  # kept while its command waits
        [cmd] = (await c.get("/api/v1/commands", params={"limit": 10})).json()["items"]
        assert cmd["status"] == "pending" and cmd["source"]["uid"] == "water"
        await upkeep(app)
        assert deletes(fake_google) == []
        while datetime.now(UTC) < start:  # the command is due at the entry's start
            await asyncio.sleep(0.2)
        leased = (await c.get("/api/v1/commands/garden")).json()["items"]
        assert [x["id"] for x in leased] == [cmd["id"]]
        result = await upkeep(app)
        assert (result["released"], result["deleted_at_source"]) == (1, 1), result
        assert deletes(fake_google) == ["water"]
        assert fake_google.calendars[cal].events["water"]["status"] == "cancelled"
        await sync_ok(app, "garden")
        assert await events_of(c, "garden") == {}
