"""Who may turn an event into a command: the caller's rights, the whitelist's sources and calendars, the audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chronos.testing import client, create_test_key

WHITELIST = [
    {"system": "homeserver", "action": "PING", "params": {"n": None}},
    {"system": "office", "action": "PRINT", "params": {"doc": None}},
]
BODY = {"start": "2026-03-02T10:00:00+01:00", "end": "2026-03-02T11:00:00+01:00"}
WINDOW = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "limit": 500}


async def _key(app, opened: list, name: str, scopes: list[str], systems: tuple[str, ...] = ()) -> tuple[object, str]:
    """A client for a new key named ``name``, and the key's id (from the key list)."""
    c = client(app, await create_test_key(app, scopes, systems, name=name))
    opened.append(c)
    admin = client(app, await create_test_key(app, ["admin"], name=f"admin-{name}"))
    opened.append(admin)
    keys = (await admin.get("/api/v1/keys")).json()
    items = keys["items"] if isinstance(keys, dict) else keys
    return c, next(k["id"] for k in items if k["name"] == name)


async def _commands(admin) -> list[dict]:
    return (await admin.get("/api/v1/commands", params={"limit": 500})).json()["items"]


async def _audit(admin, entity: str, action: str) -> list[dict]:
    r = await admin.get("/api/v1/audit", params={"entity": entity, "action": action, "limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_an_api_action_becomes_a_command_only_for_a_key_that_could_queue_it(chronos_app, api_client):
    async with chronos_app(plugins=["events", "commands"], config={"commands": {"whitelist": WHITELIST}}) as app:
        admin = await api_client(app, scopes=["admin"])
        opened: list = []
        writer, writer_id = await _key(app, opened, "writer", ["events.read", "events.write"])
        office, office_id = await _key(app, opened, "office-bot", ["events.read", "events.write"], ("office",))
        manager, manager_id = await _key(app, opened, "manager", ["events.read", "events.write", "commands.manage"])
        try:
            # events.write alone: the event is kept, says why, and no command exists.
            r = await writer.post("/api/v1/events", json={**BODY, "title": "ACTION: PING homeserver n=1"})
            assert r.status_code == 201, r.text
            hint = r.json()["metadata"]["command_hint"]
            assert hint["status"] == "rejected" and "not permitted" in hint["reason"], hint
            assert "homeserver" in hint["reason"]
            stored = (await admin.get(f"/api/v1/events/{r.json()['id']}")).json()
            assert stored["metadata"]["command_hint"] == hint
            assert await _commands(admin) == []

            # A key bound to office: not for homeserver, but for office.
            r = await office.post("/api/v1/events", json={**BODY, "title": "ACTION: PING homeserver n=2"})
            assert r.status_code == 201 and r.json()["metadata"]["command_hint"]["status"] == "rejected"
            assert await _commands(admin) == []
            r = await office.post("/api/v1/events", json={**BODY, "title": "ACTION: PRINT office doc=a"})
            assert r.status_code == 202 and r.json()["status"] == "consumed", r.text

            # commands.manage (and admin) may queue any whitelisted command.
            r = await manager.post("/api/v1/events", json={**BODY, "title": "ACTION: PING homeserver n=3"})
            assert r.status_code == 202, r.text
            r = await admin.post("/api/v1/events", json={**BODY, "title": "ACTION: PING homeserver n=4"})
            assert r.status_code == 202, r.text

            cmds = sorted(await _commands(admin), key=lambda c: c["id"])
            assert [(c["target_system"], c["params"]) for c in cmds] == [
                ("office", {"doc": "a"}),
                ("homeserver", {"n": "3"}),
                ("homeserver", {"n": "4"}),
            ]
            # Each command's audit entry names the key whose request caused it.
            creates = {a["entity_id"]: a for a in await _audit(admin, "command", "create")}
            assert creates[str(cmds[0]["id"])]["actor"] == office_id
            assert creates[str(cmds[1]["id"])]["actor"] == manager_id
            assert all(not a["actor"].startswith("system:") for a in creates.values())
            rejected = await _audit(admin, "event", "command_rejected")
            assert sorted(a["actor"] for a in rejected) == sorted([writer_id, office_id])
        finally:
            for c in opened:
                await c.aclose()


async def test_an_event_template_cannot_queue_commands_its_caller_could_not(chronos_app, api_client):
    template = {
        "name": "ping",
        "type": "event",
        "content": {"title": "ACTION: PING homeserver n={{ n }}", "duration_minutes": 5, "time_of_day": "10:00"},
    }
    config = {"commands": {"whitelist": WHITELIST}, "templates": {"event_source": "local", "event_calendar": "local"}}
    async with chronos_app(plugins=["events", "commands", "templates", "normalize"], config=config) as app:
        admin = await api_client(app, scopes=["admin"])
        user = await api_client(app, scopes=["templates.manage", "events.read", "events.write"])
        r = await user.post("/api/v1/templates", json=template)
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        r = await user.post(f"/api/v1/templates/{tid}/use", json={"variables": {"n": 1}, "date": "2026-06-15"})
        assert r.status_code == 200, r.text
        assert r.json()["event"] is not None, "the refused ACTION stays an event"
        event = (await admin.get(f"/api/v1/events/{r.json()['event']['id']}")).json()
        assert event["metadata"]["command_hint"]["status"] == "rejected"
        assert await _commands(admin) == []
        r = await admin.post(f"/api/v1/templates/{tid}/use", json={"variables": {"n": 2}, "date": "2026-06-16"})
        assert r.status_code == 200 and r.json()["event"] is None, r.text
        assert [c["params"] for c in await _commands(admin)] == [{"n": "2"}]


async def test_synced_commands_are_audited_under_their_calendar(calendar_app, fake_source, api_client):
    src = fake_source()
    src.put("a1", "ACTION: PING homeserver n=7")
    async with calendar_app(src) as app:
        await app.state.runtime.pipeline.run("fake", "cal", full=True)
        admin = await api_client(app, scopes=["admin"])
        (cmd,) = await _commands(admin)
        creates = [a for a in await _audit(admin, "command", "create") if a["entity_id"] == str(cmd["id"])]
        assert creates[0]["actor"] == "source:fake/cal"


async def test_whitelist_entries_restrict_sources_and_calendars(calendar_app, fake_source, api_client):
    src = fake_source()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    src.put("a1", "ACTION: PING homeserver n=1")
    src.put("a2", "ACTION: PRINT office doc=x")
    src.put("a3", "ACTION: WATER garden minutes=5", start=tomorrow)
    seeds = [
        {"system": "homeserver", "action": "PING", "params": {"n": None}, "sources": ["ics"]},
        {"system": "office", "action": "PRINT", "params": {"doc": None}, "sources": ["fake"], "calendars": ["cal"]},
        {
            "system": "garden",
            "action": "WATER",
            "params": {"minutes": None},
            "schedule": "event_start",
            "calendars": ["cal"],
        },
    ]
    async with calendar_app(src, whitelist=seeds) as app:
        admin = await api_client(app, scopes=["admin"])
        await app.state.runtime.pipeline.run("fake", "cal", full=True)
        cmds = {c["command"]: c for c in await _commands(admin)}
        assert sorted(cmds) == ["PRINT", "WATER"], "PING may only come from ics calendars"
        events = (await admin.get("/api/v1/events", params={**WINDOW, "calendar_id": "cal"})).json()["items"]
        ping = next(e for e in events if e["uid"] == "a1")
        assert ping["metadata"]["command_hint"]["status"] == "rejected"
        assert "source 'fake'" in ping["metadata"]["command_hint"]["reason"]

        entries = {e["action"]: e for e in (await admin.get("/api/v1/whitelists")).json()["items"]}
        assert entries["PING"]["sources"] == ["ics"] and entries["PING"]["calendars"] is None
        assert entries["PRINT"]["calendars"] == ["cal"]

        # Narrowing the calendars cancels the pending command from another calendar.
        r = await admin.patch(f"/api/v1/whitelists/{entries['WATER']['id']}", json={"calendars": ["other"]})
        assert r.status_code == 200 and r.json()["calendars"] == ["other"], r.text
        water = next(c for c in await _commands(admin) if c["command"] == "WATER")
        assert water["status"] == "cancelled" and "calendar 'cal'" in water["error"]

        # Through the API: the fields are checked; null allows any.
        body = {"system": "s1", "action": "GO", "sources": ["local"], "calendars": ["work", "work"]}
        r = await admin.post("/api/v1/whitelists", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["sources"] == ["local"] and r.json()["calendars"] == ["work"]
        r = await admin.patch(f"/api/v1/whitelists/{r.json()['id']}", json={"sources": None})
        assert r.status_code == 200 and r.json()["sources"] is None
        r = await admin.post("/api/v1/whitelists", json={"system": "s2", "action": "GO", "sources": "ics"})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/sources", r.text
        r = await admin.post("/api/v1/whitelists", json={"system": "s2", "action": "GO", "calendars": [""]})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"].startswith("/calendars"), r.text
