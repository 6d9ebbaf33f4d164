"""The source contract as the ics source fills it: read-only calendars, no write-back.

ICS files and feeds cannot be changed from here, so the source never claims
it can delete (``can_delete`` is False, ``delete_entry`` refuses), whatever a
calendar's ``read_only`` option says; ``read_only`` is carried on the
CalendarSpec the source reports and shown by ``GET /api/v1/sync/calendars``.
What that means downstream: an ics entry the commands plugin consumes (a
``NOTIZ:`` entry becoming a note) gets a local tombstone, never a deletion
queued for the source, and later syncs do not bring it back.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from chronos import testing as kit
from chronos.plugin import CalendarSpec, SourceError
from ics_support import ics, single

from chronos_ics.settings import IcsSettings
from chronos_ics.source import IcsSource

pytestmark = pytest.mark.exercises_hook("register_sources")


def settings(tmp_path, **second) -> IcsSettings:
    return IcsSettings(
        calendars=[
            {"id": "file", "path": str(tmp_path / "a.ics")},
            {"id": "feed", "url": "https://cal.example.org/x.ics?token=s3cret", "interval_seconds": 0, **second},
        ],
        parse_workers=0,
    )


def test_calendars_carry_read_only_and_the_source_cannot_delete(tmp_path):
    src = IcsSource(settings(tmp_path, read_only=False))
    specs = {spec.id: spec for spec in src.calendars()}
    assert list(specs) == ["file", "feed"]
    assert specs["file"].read_only is True  # the default
    assert specs["feed"].read_only is False  # as configured
    assert (specs["file"].interval_seconds, specs["feed"].interval_seconds) == (900, 0)
    assert specs["feed"].options["url"] == "https://cal.example.org/x.ics?token=s3cret"
    # No write-back, read-only or not: a calendar configured writable still cannot delete.
    for spec in specs.values():
        assert src.can_delete(spec) is False, spec
    assert src.can_delete(CalendarSpec("unknown")) is False


async def test_delete_entry_is_refused(tmp_path):
    src = IcsSource(settings(tmp_path))
    for spec in src.calendars():
        with pytest.raises(SourceError, match="'ics' is read-only"):
            await src.delete_entry(spec, "uid@test", "")


async def test_the_api_shows_each_calendar_read_only_flag(chronos_app, api_client, tmp_path):
    (tmp_path / "a.ics").write_text(ics(single("a", "Alpha")))
    cfg = {
        "ics": {
            "calendars": [
                {"id": "ro", "path": str(tmp_path / "a.ics")},
                {"id": "rw", "path": str(tmp_path / "a.ics"), "read_only": False},
            ],
            "parse_workers": 0,
        }
    }
    async with chronos_app(plugins=["events", "ics"], config=cfg) as app:
        pipeline = app.state.runtime.pipeline
        refs = {cid: pipeline.calendar("ics", cid) for cid in ("ro", "rw")}
        assert {cid: ref.calendar.read_only for cid, ref in refs.items()} == {"ro": True, "rw": False}
        assert {cid: ref.source.can_delete(ref.calendar) for cid, ref in refs.items()} == {"ro": False, "rw": False}
        c = await api_client(app, scopes=["events.read"])
        r = await c.get("/api/v1/sync/calendars")
        assert r.status_code == 200, r.text
        shown = {x["calendar_id"]: x["read_only"] for x in r.json() if x["source"] == "ics"}
        assert shown == {"ro": True, "rw": False}


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "configured-writable"])
async def test_a_consumed_ics_entry_gets_a_tombstone_not_a_deletion_at_the_source(
    chronos_app, api_client, tmp_path, read_only
):
    from chronos_commands.models import SourceDeletion
    from chronos_events.models import EventTombstone

    path = tmp_path / "team.ics"
    path.write_text(ics(single("note-1", "NOTIZ: Milch kaufen"), single("plain", "Team meeting", days=2)))
    cfg = {
        "ics": {
            "calendars": [{"id": "team", "path": str(path), "read_only": read_only, "interval_seconds": 0}],
            "parse_workers": 0,
        }
    }
    async with chronos_app(plugins=["events", "normalize", "ics", "commands"], config=cfg) as app:
        c = await api_client(app, scopes=["admin"])
        run = await kit.sync_now(app, "ics", "team")
        assert run.status == "ok", run

        notes = (await c.get("/api/v1/notes")).json()["items"]
        assert [(n["content"], n["source"]["uid"]) for n in notes] == [("Milch kaufen", "note-1")]
        r = await c.get(
            "/api/v1/events",
            params={"calendar_id": "team", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
        )
        assert [e["uid"] for e in r.json()["items"]] == ["plain"]

        async with app.state.chronos.db.read() as s:
            tombstones = (await s.execute(select(EventTombstone))).scalars().all()
            deletions = (await s.execute(select(SourceDeletion))).scalars().all()
        assert [(t.source, t.calendar_id, t.uid, t.recurrence_id) for t in tombstones] == [
            ("ics", "team", "note-1", "")
        ]
        assert deletions == [], "an ics entry must never be queued for deletion at its source"

        # The file still has the entry: a full listing finds the tombstone and neither
        # restores the event nor creates the note twice.
        run = await kit.sync_now(app, "ics", "team", full=True)
        assert (run.status, run.added, run.deleted) == ("ok", 0, 0), run
        r = await c.get(
            "/api/v1/events",
            params={"calendar_id": "team", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
        )
        assert [e["uid"] for e in r.json()["items"]] == ["plain"]
        assert len((await c.get("/api/v1/notes")).json()["items"]) == 1
