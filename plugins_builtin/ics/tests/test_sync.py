"""The ICS source through the whole pipeline, with the real events and normalize plugins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chronos import testing as kit
from ics_support import LOOPBACK_ALLOWED, ics, single, today

pytestmark = pytest.mark.exercises_hook("register_sources")

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "examples" / "calendars" / "demo.ics"
PLUGINS = ["events", "normalize", "ics"]
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def config(*calendars: dict, **extra) -> dict:
    return {"ics": {"calendars": list(calendars), "parse_workers": 0, **extra}, "network": LOOPBACK_ALLOWED}


async def sync(app, calendar_id: str, **kw):
    return await kit.sync_now(app, "ics", calendar_id, **kw)


async def events_of(client, calendar_id: str) -> list[dict]:
    lo = (datetime.now(UTC) - timedelta(days=4000)).strftime("%Y-%m-%dT00:00:00Z")
    hi = (datetime.now(UTC) + timedelta(days=4000)).strftime("%Y-%m-%dT00:00:00Z")
    r = await client.get("/api/v1/events", params={"calendar_id": calendar_id, "from": lo, "to": hi, "limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_the_demo_calendar(chronos_app, api_client):
    cal = {"id": "demo", "path": str(DEMO), "demo_week": "2026-01-12", "past_days": 14, "horizon_days": 14}
    async with chronos_app(plugins=PLUGINS, config=config(cal)) as app:
        run = await sync(app, "demo")
        assert (run.status, run.failed, run.error) == ("ok", 0, None) and run.added > 30
        c = await api_client(app, scopes=["events.read", "health.read"])
        items = await events_of(c, "demo")
        by_uid: dict[str, list[dict]] = {}
        for e in items:
            by_uid.setdefault(e["uid"], []).append(e)
        monday = today() - timedelta(days=today().weekday())
        last_monday = monday - timedelta(days=7)

        standups = {utc(e["start_utc"]).astimezone(BERLIN): e for e in by_uid["standup@demo.chronos"]}
        days = {t.date() for t in standups}
        assert last_monday + timedelta(days=4) not in days  # EXDATE: no standup on last week's Friday
        moved = [t for t in standups if t.date() == monday + timedelta(days=1)]
        assert [t.strftime("%H:%M") for t in moved] == ["10:00"]  # the exception moved it
        assert "moved" in standups[moved[0]]["title"]
        assert {t.strftime("%H:%M") for t in standups if t not in moved} == {"09:30"}

        ny = [utc(e["start_utc"]).astimezone(NY) for e in by_uid["sync-ny@demo.chronos"]]
        assert {t.strftime("%H:%M") for t in ny} == {"09:00"}
        assert monday + timedelta(days=1) not in {t.date() for t in ny}  # the cancelled instance

        [holiday] = by_uid["holiday@demo.chronos"]
        assert holiday["all_day"] and holiday["start_date"] == str(last_monday + timedelta(days=1))
        assert holiday["end_date"] == str(last_monday + timedelta(days=2)) and holiday["transparency"] == "free"
        [conf] = by_uid["conference@demo.chronos"]
        assert (conf["start_date"], conf["end_date"]) == (
            str(monday + timedelta(days=2)),
            str(monday + timedelta(days=5)),
        )

        planning = by_uid["planning@demo.chronos"][0]
        assert [(t["text"], t["done"]) for t in planning["sub_tasks"]] == [
            ("review last sprint", True),
            ("estimate the migration stories", False),
            ("agree on the sprint goal", False),
        ]
        assert {"team", "planning", "work"} <= set(planning["tags"])
        [migration] = by_uid["migration@demo.chronos"]
        assert migration["all_done"] and migration["mode"] == "auto-plan" and "maintenance" in migration["tags"]
        [deploy] = by_uid["deploy-web1@demo.chronos"]
        assert deploy["title"] == "ACTION: DEPLOY web-1 version=1.2"
        assert by_uid["note-vendor@demo.chronos"][0]["title"].startswith("NOTIZ: ")
        assert by_uid["link-runbook@demo.chronos"][0]["title"].startswith("URL: https://")
        assert by_uid["dentist@demo.chronos"][0]["status"] == "tentative"

        again = await sync(app, "demo")
        assert again.status == "ok" and again.not_modified


async def test_file_changes_become_updates_and_deletions(chronos_app, tmp_path):
    path = tmp_path / "team.ics"
    path.write_text(ics(single("a", "Alpha"), single("b", "Beta", days=2), single("c", "Gamma", days=3)))
    async with chronos_app(plugins=PLUGINS, config=config({"id": "team", "path": str(path)})) as app:
        run = await sync(app, "team")
        assert (run.status, run.added) == ("ok", 3)
        path.write_text(ics(single("a", "Alpha"), single("b", "Beta renamed", days=2), single("d", "Delta", days=4)))
        run = await sync(app, "team")
        assert (run.added, run.updated, run.unchanged, run.deleted) == (1, 1, 1, 1)
        # Same bytes, new mtime: hashed, found equal, not parsed again.
        path.write_bytes(path.read_bytes())
        run = await sync(app, "team")
        assert run.not_modified and run.cursor["sha256"]


async def test_dst_through_the_pipeline(chronos_app, api_client, tmp_path):
    path = tmp_path / "ny.ics"
    path.write_text(
        ics(
            "UID:w@test\nDTSTART;TZID=America/New_York:20261019T090000\n"
            "DTEND;TZID=America/New_York:20261019T100000\nRRULE:FREQ=WEEKLY;COUNT=4\nSUMMARY:Weekly"
        )
    )
    cal = {"id": "ny", "path": str(path), "past_days": 3650, "horizon_days": 3650}
    async with chronos_app(plugins=PLUGINS, config=config(cal)) as app:
        assert (await sync(app, "ny")).added == 4
        items = await events_of(await api_client(app, scopes=["events.read"]), "ny")
        starts = [utc(e["start_utc"]) for e in items]
        assert [t.hour for t in starts] == [13, 13, 14, 14]
        assert {t.astimezone(NY).strftime("%H:%M") for t in starts} == {"09:00"}
        assert {e["timezone"] for e in items} == {"America/New_York"}


async def test_a_broken_file_keeps_the_last_good_data(chronos_app, api_client, tmp_path):
    path = tmp_path / "team.ics"
    path.write_text(ics(single("a", "Alpha"), single("b", "Beta")))
    async with chronos_app(plugins=PLUGINS, config=config({"id": "team", "path": str(path)})) as app:
        await sync(app, "team")
        c = await api_client(app, scopes=["events.read", "health.read"])
        for content, message in [
            ("<html>maintenance</html>", "not an iCalendar file"),
            ("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\n", "END:VCALENDAR is missing"),
            ("", "the calendar is empty"),
        ]:
            path.write_text(content)
            run = await sync(app, "team")
            assert run.status == "error" and message in run.error and run.deleted == 0
            assert len(await events_of(c, "team")) == 2
        health = (await c.get("/health")).json()["checks"]["sync"]
        assert health["status"] == "degraded" and "empty" in health["calendars"]["ics/team"]["error"]
        path.unlink()
        run = await sync(app, "team")
        assert run.status == "error" and "file not found" in run.error
        path.write_text(ics(single("a", "Alpha")))
        run = await sync(app, "team")
        assert (run.status, run.deleted) == ("ok", 1)
        assert (await c.get("/health")).json()["checks"]["sync"]["status"] == "ok"


async def test_bad_entries_fail_alone(chronos_app, api_client, tmp_path):
    path = tmp_path / "team.ics"
    path.write_text(ics(single("a", "Alpha"), single("b", "Beta")))
    async with chronos_app(plugins=PLUGINS, config=config({"id": "team", "path": str(path)})) as app:
        await sync(app, "team")
        path.write_text(
            ics(
                single("a", "Alpha"),
                "UID:b\nSUMMARY:Beta lost its start",
                "UID:c\nDTSTART:20260101T000000Z\nRRULE:FREQ=SOMETIMES\nSUMMARY:bad rule",
            )
        )
        run = await sync(app, "team")
        assert (run.status, run.failed, run.deleted) == ("partial", 2, 0)
        errors = {e["uid"]: e for e in run.errors}
        assert errors["b"]["stage"] == "source" and "no DTSTART" in errors["b"]["message"]
        assert "RRULE" in errors["c"]["message"]
        titles = sorted(e["title"] for e in await events_of(await api_client(app, scopes=["events.read"]), "team"))
        assert titles == ["Alpha", "Beta"]  # b's last good version stays


async def test_an_entry_with_an_out_of_range_date_fails_alone(chronos_app, api_client, tmp_path):
    path = tmp_path / "team.ics"
    path.write_text(ics(single("a", "Alpha"), single("b", "Beta")))
    cfg = {**config({"id": "team", "path": str(path)}), "normalize": {"default_timezone": "Europe/Berlin"}}
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        await sync(app, "team")
        path.write_text(
            ics(
                single("a", "Alpha renamed"),
                single("b", "Beta"),
                "UID:z\nDTSTART;VALUE=DATE:99991231\nSUMMARY:the last day",
                "UID:y\nDTSTART;TZID=America/New_York:99991231T230000\nSUMMARY:late",
                "UID:x\nDTSTART:00010101T000000\nSUMMARY:floating: Berlin time, before year 1 in UTC",
            )
        )
        run = await sync(app, "team")
        assert (run.status, run.updated, run.unchanged, run.failed, run.deleted) == ("partial", 1, 1, 3, 0)
        assert {e["uid"] for e in run.errors} == {"x", "y", "z"}
        assert all("out of range" in e["message"] for e in run.errors), run.errors
        titles = sorted(e["title"] for e in await events_of(await api_client(app, scopes=["events.read"]), "team"))
        assert titles == ["Alpha renamed", "Beta"]


async def test_http_feed_uses_conditional_get(chronos_app, feed_server):
    feed_server.feed.body = ics(single("h1", "From the web"), single("h2", "Also from the web")).encode()
    cals = [
        {"id": "web", "url": feed_server.url("/cal.ics?token=s3cret")},
        {"id": "gone", "url": feed_server.url("/missing.ics")},
        {"id": "loop", "url": feed_server.url("/loop")},
    ]
    async with chronos_app(plugins=PLUGINS, config=config(*cals)) as app:
        run = await sync(app, "web")
        assert (run.status, run.added) == ("ok", 2) and run.cursor["etag"] == feed_server.feed.etag
        run = await sync(app, "web")
        assert run.not_modified and feed_server.feed.requests[-1]["if-none-match"] == feed_server.feed.etag
        run = await sync(app, "gone")
        assert run.status == "error" and "HTTP 404" in run.error
        run = await sync(app, "loop")
        assert run.status == "error" and "redirect loop" in run.error
        assert "s3cret" not in str([(await sync(app, "web", full=True)).error])


@pytest.mark.backends("sqlite")  # the command line, not the storage, is under test here
async def test_the_sync_command_line(database, tmp_path):
    import json
    import os
    import subprocess
    import sys

    import yaml

    path = tmp_path / "team.ics"
    path.write_text(ics(single("a", "Alpha"), "UID:b\nSUMMARY:no start"))
    cfg = tmp_path / "chronos.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "database": database.settings_section(),
                "logging": {"level": "warning"},
                "plugins": {"enabled": PLUGINS},
                **config({"id": "team", "path": str(path)}),
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHRONOS")}
    chronos = str(Path(sys.executable).parent / "chronos")

    def run(*args):
        return subprocess.run(
            [chronos, "--config", str(cfg), "sync", *args], capture_output=True, text=True, env=env, timeout=120
        )

    res = run("--json")
    assert res.returncode == 0, res.stderr
    [team] = [r for r in json.loads(res.stdout.splitlines()[-1]) if r["source"] == "ics"]
    assert (team["status"], team["added"], team["failed"]) == ("partial", 1, 1)
    # A partial run keeps the old cursor: the failed entry is offered again.
    res = run("--source", "ics", "--calendar", "team")
    assert res.returncode == 0 and "ics/team: partial added=0 updated=0 unchanged=1" in res.stdout
    path.write_text(ics(single("a", "Alpha"), single("b", "Beta")))
    assert "ics/team: ok added=1" in run("--source", "ics").stdout
    path.write_text("garbage")
    res = run("--source", "ics")
    assert res.returncode == 1 and "not an iCalendar file" in res.stdout
    res = run("--source", "nope")
    assert res.returncode == 2 and "no enabled source named 'nope'" in res.stderr
