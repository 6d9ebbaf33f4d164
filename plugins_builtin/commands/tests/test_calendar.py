"""Calendar entries through the real pipeline and event store: consumption, hints, edits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chronos.plugin import CalendarSpec, EventDraft

pytestmark = pytest.mark.exercises_hook("register_enrichers", "register_sinks")

WINDOW = {"calendar_id": "cal", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "limit": 500}


async def sync(app) -> None:
    # A full listing every time (the fake source would answer "not modified" to an unchanged calendar).
    await app.state.runtime.pipeline.run("fake", "cal", full=True)


async def events(c) -> dict[str, dict]:
    r = await c.get("/api/v1/events", params=WINDOW)
    assert r.status_code == 200, r.text
    return {e["uid"]: e for e in r.json()["items"]}


async def commands(c, **params) -> list[dict]:
    return (await c.get("/api/v1/commands", params={"limit": 500, **params})).json()["items"]


async def test_entries_become_notes_links_and_commands_once(calendar_app, fake_source, api_client, helpers):
    src = fake_source()
    src.put("n1", "NOTIZ: Milch kaufen <b>&</b>", description="2 Liter\n'; DROP TABLE events; --")
    src.put("l1", "URL: https://example.org/docs?a=1 The docs")
    src.put("l2", "url: http://example.com")
    src.put("a1", "ACTION: light homeserver room=kitchen level=on")
    src.put("h1", "Notiz:kein Leerzeichen")
    src.put("r1", "ACTION: REBOOT homeserver")
    src.put("r2", "ACTION: LIGHT")
    src.put("r3", "ACTION: LIGHT homeserver room=Kitchen")
    src.put("r4", "URL: ftp://example.org")
    src.put("p1", "Team meeting über <script>alert(1)</script>")
    async with calendar_app(src) as app:
        c = await api_client(app, scopes=["admin"])
        await sync(app)
        left = await events(c)
        assert sorted(left) == ["h1", "p1", "r1", "r2", "r3", "r4"]
        assert left["h1"]["metadata"]["command_hint"] == {
            "status": "ignored",
            "kind": "note",
            "reason": "'Notiz:' needs a space after the colon; write 'NOTIZ: ...'",
        }
        assert left["r1"]["metadata"]["command_hint"]["status"] == "rejected"
        assert "not whitelisted" in left["r1"]["metadata"]["command_hint"]["reason"]
        assert "needs a command and a target" in left["r2"]["metadata"]["command_hint"]["reason"]
        assert "/params/room" in left["r3"]["metadata"]["command_hint"]["reason"]
        assert "only http and https" in left["r4"]["metadata"]["command_hint"]["reason"]
        assert "command_hint" not in left["p1"]["metadata"]
        assert left["p1"]["title"] == "Team meeting über <script>alert(1)</script>"

        notes = (await c.get("/api/v1/notes")).json()["items"]
        assert len(notes) == 1
        assert notes[0]["content"] == "Milch kaufen <b>&</b>" and notes[0]["description"].startswith("2 Liter")
        assert notes[0]["timestamp"] == "2026-03-02T09:00:00Z" and notes[0]["calendar_id"] == "cal"
        assert notes[0]["source"]["uid"] == "n1" and notes[0]["source"]["source"] == "fake"
        links = {x["source"]["uid"]: x for x in (await c.get("/api/v1/links")).json()["items"]}
        assert links["l1"]["url"] == "https://example.org/docs?a=1" and links["l1"]["title"] == "The docs"
        assert links["l2"]["title"] == "url: http://example.com"
        cmds = await commands(c)
        assert len(cmds) == 1
        cmd = cmds[0]
        assert (cmd["command"], cmd["target_system"], cmd["params"]) == (
            "LIGHT",
            "homeserver",
            {"room": "kitchen", "level": "on"},
        )
        assert cmd["origin"] == "calendar" and cmd["status"] == "pending"
        assert cmd["source"]["uid"] == "a1" and cmd["source"]["event_start"] == "2026-03-02T09:00:00Z"

        rejected = await helpers.audit(c, entity="event", action="command_rejected")
        assert len(rejected) == 4  # r1, r2, r3, r4: never silently dropped

        # A re-sync finds the consumed entries hidden and creates nothing twice.
        await sync(app)
        await sync(app)
        assert sorted(await events(c)) == ["h1", "p1", "r1", "r2", "r3", "r4"]
        assert len(await commands(c)) == 1
        assert len((await c.get("/api/v1/notes")).json()["items"]) == 1
        assert len((await c.get("/api/v1/links")).json()["items"]) == 2
        assert len(await helpers.audit(c, entity="event", action="command_rejected")) == 4

        # Whitelisting REBOOT later takes the waiting entry on the next sync.
        await c.post("/api/v1/whitelists", json={"system": "homeserver", "action": "REBOOT"})
        await sync(app)
        assert "r1" not in await events(c)
        assert sorted(x["command"] for x in await commands(c)) == ["LIGHT", "REBOOT"]


async def test_a_failed_delete_at_a_writable_source_never_duplicates(calendar_app, fake_source, api_client, helpers):
    src = fake_source(writable=True)
    src.put("a1", "ACTION: PING homeserver n=1")
    src.put("n1", "NOTE: from a writable calendar")
    src.fail_deletes = True
    async with calendar_app(src) as app:
        c = await api_client(app, scopes=["admin"])
        queue = helpers.queue(app)
        from chronos_commands.consume import calendar_upkeep

        await sync(app)
        assert await events(c) == {}
        assert (await calendar_upkeep(queue))["delete_failures"] == 2
        # The source still has the entries: the next sync brings them back and consumes them again, idempotently.
        await sync(app)
        assert await events(c) == {}
        assert len(await commands(c)) == 1
        assert len((await c.get("/api/v1/notes")).json()["items"]) == 1
        src.fail_deletes = False
        await helpers.shift_deletions(app)
        assert (await calendar_upkeep(queue))["deleted_at_source"] == 2
        assert sorted(src.deleted) == [("a1", ""), ("n1", "")]
        await sync(app)
        assert len(await commands(c)) == 1
        assert len(await helpers.audit(c, entity="event_source", action="delete_at_source")) == 2


async def test_a_read_only_calendar_is_never_written_even_if_its_source_could(
    calendar_app, fake_source, api_client, helpers
):
    src = fake_source(writable=True)
    src.calendars = lambda: [CalendarSpec("cal", interval_seconds=0, read_only=True)]
    src.put("n1", "NOTE: stays at the source")
    async with calendar_app(src) as app:
        c = await api_client(app, scopes=["admin"])
        from chronos_commands.consume import calendar_upkeep

        await sync(app)
        assert await events(c) == {}  # consumed: hidden by a local tombstone
        await helpers.shift_deletions(app)
        assert (await calendar_upkeep(helpers.queue(app)))["deleted_at_source"] == 0
        assert src.deleted == [] and "n1" in {d.uid for d in src.entries()}
        await sync(app)
        assert await events(c) == {} and len((await c.get("/api/v1/notes")).json()["items"]) == 1


async def test_scheduled_actions_follow_edits_of_their_entry(calendar_app, fake_source, api_client, helpers):
    src = fake_source()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    src.put("w1", "ACTION: WATER garden minutes=10", start=tomorrow)
    src.put("w2", "ACTION: WATER garden minutes=5", start=tomorrow + timedelta(hours=2))
    src.put("w3", "ACTION: WATER garden minutes=7", start=tomorrow + timedelta(hours=3))
    src.put("old", "ACTION: WATER garden minutes=1", start=datetime(2026, 1, 1, 6, tzinfo=UTC))
    async with calendar_app(src) as app:
        c = await api_client(app, scopes=["admin"])
        await sync(app)
        by_uid = {x["source"]["uid"]: x for x in await commands(c)}
        assert by_uid["w1"]["not_before"] == tomorrow.isoformat().replace("+00:00", "Z")
        # A start in the past: due now, and the entry is consumed at once.
        assert by_uid["old"]["not_before"] < by_uid["w1"]["not_before"]
        left = await events(c)
        assert sorted(left) == ["w1", "w2", "w3"]
        assert left["w1"]["metadata"]["command"]["id"] == by_uid["w1"]["id"]

        # Moved: re-timed. Deleted: cancelled. Text changed: the old command makes way for a new one.
        later = tomorrow + timedelta(hours=5)
        src.put("w1", "ACTION: WATER garden minutes=10", start=later)
        src.remove("w2")
        src.put("w3", "ACTION: WATER garden minutes=20", start=tomorrow + timedelta(hours=3))
        await sync(app)
        now = {x["id"]: x for x in await commands(c)}
        assert now[by_uid["w1"]["id"]]["not_before"] == later.isoformat().replace("+00:00", "Z")
        assert now[by_uid["w1"]["id"]]["status"] == "pending"
        assert now[by_uid["w2"]["id"]]["status"] == "cancelled"
        assert now[by_uid["w2"]["id"]]["error"] == "the calendar entry was deleted"
        assert now[by_uid["w3"]["id"]]["status"] == "cancelled"
        w3 = [x for x in now.values() if x["source"]["uid"] == "w3" and x["status"] == "pending"]
        assert len(w3) == 1 and w3[0]["params"] == {"minutes": "20"}
        retimed = await helpers.audit(c, entity="command", action="retime")
        assert [a["entity_id"] for a in retimed] == [str(by_uid["w1"]["id"])]
        cancels = await helpers.audit(c, entity="command", action="cancel")
        assert sorted(a["entity_id"] for a in cancels) == sorted([str(by_uid["w2"]["id"]), str(by_uid["w3"]["id"])])

        # A cancelled instance cancels its command too.
        src.put("w1", "ACTION: WATER garden minutes=10", start=later, status="cancelled")
        await sync(app)
        assert {x["id"]: x for x in await commands(c)}[by_uid["w1"]["id"]]["status"] == "cancelled"

        # Once a kept entry's command is handed out, the upkeep job consumes the entry (tombstone: read-only).
        from chronos_commands.consume import calendar_upkeep

        await helpers.shift(app, [w3[0]["id"]], not_before=timedelta(seconds=1))
        leased = (await c.get("/api/v1/commands/garden")).json()["items"]
        assert sorted(x["id"] for x in leased) == sorted([w3[0]["id"], by_uid["old"]["id"]])
        assert (await calendar_upkeep(helpers.queue(app)))["released"] == 1
        await sync(app)
        assert "w3" not in await events(c)


async def test_a_refusal_quoting_unstorable_text_is_still_recorded(calendar_app, fake_source, api_client, helpers):
    # The reason names the refused key, a NUL byte here: PostgreSQL cannot store it as is.
    src = fake_source()
    src.put("a1", "ACTION: LIGHT homeserver room=hall", description='```json\n{"note": {"\\u0000": 1}}\n```')
    src.put("a2", "ACTION: LIGHT homeserver room=kitchen", description='```\n{"note": 1e400}\n```')
    src.put("ok", "ACTION: LIGHT homeserver room=hall level=on")
    async with calendar_app(src) as app:
        c = await api_client(app, scopes=["admin"])
        await sync(app)
        hints = {uid: e["metadata"].get("command_hint") for uid, e in (await events(c)).items()}
        assert set(hints) == {"a1", "a2"}
        assert hints["a1"]["status"] == "rejected"
        assert "/params/note/\\u0000: the key contains the control character U+0000" in hints["a1"]["reason"]
        assert hints["a2"]["status"] == "rejected" and "/params/note: is not a finite number" in hints["a2"]["reason"]
        assert [x["params"] for x in await commands(c)] == [{"room": "hall", "level": "on"}]
        rejected = await helpers.audit(c, entity="event", action="command_rejected")
        assert len(rejected) == 2 and "\\u0000" in rejected[0]["change"]["reason"]


async def test_each_instance_of_a_recurring_action_is_one_command(calendar_app, fake_source, api_client):
    src = fake_source()
    base = datetime(2026, 3, 2, 9, tzinfo=UTC)
    for i in range(3):
        start = base + timedelta(days=i)
        src.add(
            EventDraft(
                uid="series",
                recurrence_id=start.strftime("%Y%m%dT%H%M%SZ"),
                start=start,
                end=start + timedelta(hours=1),
                title="ACTION: PING homeserver n=1",
            )
        )
    async with calendar_app(src) as app:
        c = await api_client(app, scopes=["admin"])
        await sync(app)
        await sync(app)
        cmds = await commands(c)
        assert len(cmds) == 3 and len({x["source"]["recurrence_id"] for x in cmds}) == 3


async def test_notes_and_links_pages(calendar_app, fake_source, api_client):
    src = fake_source()
    base = datetime(2026, 3, 2, 9, tzinfo=UTC)
    for i in range(7):
        src.put(f"n{i}", f"NOTE: note {i}", start=base + timedelta(hours=i % 3))
    src.put("l0", "URL: https://example.org")
    async with calendar_app(src) as app:
        reader = await api_client(app, scopes=["events.read"])
        await sync(app)
        seen, cursor = [], None
        while True:
            r = await reader.get("/api/v1/notes", params={"limit": 3} | ({"cursor": cursor} if cursor else {}))
            assert r.status_code == 200
            seen += [(x["timestamp"], x["id"]) for x in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        assert len(seen) == 7 and seen == sorted(seen, reverse=True)
        r = await reader.get(
            "/api/v1/notes", params={"from": "2026-03-02T10:00:00+01:00", "to": "2026-03-02T09:30:00Z"}
        )
        assert sorted(x["content"] for x in r.json()["items"]) == ["note 0", "note 3", "note 6"]
        assert (await reader.get("/api/v1/notes", params={"calendar_id": "other"})).json()["items"] == []
        assert (await reader.get("/api/v1/notes", params={"cursor": "bogus"})).status_code == 400
        links_cursor = (await reader.get("/api/v1/links", params={"limit": 1})).json()
        assert links_cursor["next_cursor"] is None and len(links_cursor["items"]) == 1
        r = await reader.get(
            "/api/v1/links",
            params={"cursor": (await reader.get("/api/v1/notes", params={"limit": 1})).json()["next_cursor"]},
        )
        assert r.status_code == 400  # a notes cursor is not a links cursor
        r = await reader.get("/api/v1/notes", params={"from": "2026-03-03T00:00:00Z", "to": "2026-03-01T00:00:00Z"})
        assert r.status_code == 422
        r = await reader.get("/api/v1/notes", params={"from": "2026-03-03T00:00:00"})
        assert r.status_code == 422
        nobody = await api_client(app, scopes=["commands.manage"])
        assert (await nobody.get("/api/v1/notes")).status_code == 403


async def test_an_action_created_through_the_event_api_is_handled_like_a_synced_one(chronos_app, api_client):
    async with chronos_app(
        plugins=["events", "commands"],
        config={"commands": {"whitelist": [{"system": "homeserver", "action": "PING", "params": {"n": None}}]}},
    ) as app:
        c = await api_client(app, scopes=["admin"])
        body = {
            "title": "ACTION: ping homeserver n=3",
            "start": "2026-03-02T10:00:00+01:00",
            "end": "2026-03-02T11:00:00+01:00",
        }
        r = await c.post("/api/v1/events", json=body, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 202 and r.json()["status"] == "consumed", r.text
        r = await c.post("/api/v1/events", json=body, headers={"Idempotency-Key": "k1"})
        assert r.status_code in (200, 202)
        cmds = (await c.get("/api/v1/commands")).json()["items"]
        assert len(cmds) == 1 and cmds[0]["params"] == {"n": "3"} and cmds[0]["source"]["source"] == "local"
        r = await c.post("/api/v1/events", json={**body, "title": "ACTION: SHUTDOWN homeserver"})
        assert r.status_code == 201
        assert r.json()["metadata"]["command_hint"]["status"] == "rejected"
