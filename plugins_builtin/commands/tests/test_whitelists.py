"""Whitelists: CRUD, config seeding, param rules, and the check on every enqueue."""

from __future__ import annotations

import asyncio
import json
import time

import pytest


async def test_seeded_entries_and_crud(commands_app, api_client, helpers):
    async with commands_app() as app:
        admin = await api_client(app, scopes=["admin"])
        r = await admin.get("/api/v1/whitelists")
        assert r.status_code == 200
        items = r.json()["items"]
        light = next(e for e in items if e["action"] == "LIGHT")
        assert light["origin"] == "config" and light["system"] == "homeserver"
        assert light["allowed_params_json"] == {
            "room": {"regex": "[a-z_]{1,20}"},
            "level": {"enum": ["on", "off", 0, 50, 100]},
            "note": None,
        }
        assert next(e for e in items if e["action"] == "RUN")["max_attempts"] == 2

        body = {
            "system": "garage",
            "action": "open",
            "allowed_params_json": {"door": ["left", "right"]},
            "schedule": "event_start",
            "description": "Garage doors",
        }
        r = await admin.post("/api/v1/whitelists", json=body)
        assert r.status_code == 201, r.text
        entry = r.json()
        assert entry["action"] == "OPEN" and entry["allowed_params_json"] == {"door": {"enum": ["left", "right"]}}
        assert entry["origin"] == "api" and entry["schedule"] == "event_start"
        r = await admin.post("/api/v1/whitelists", json=body)
        assert r.status_code == 409 and r.json()["existing_id"] == entry["id"]

        r = await admin.patch(f"/api/v1/whitelists/{entry['id']}", json={"allowed_params_json": {"door": "[a-z]+"}})
        assert r.status_code == 200 and r.json()["allowed_params_json"] == {"door": {"regex": "[a-z]+"}}
        assert (await admin.get(f"/api/v1/whitelists/{entry['id']}")).json()["allowed_params_json"]["door"]
        r = await admin.patch(f"/api/v1/whitelists/{entry['id']}", json={"enabled": None})
        assert r.status_code == 422
        assert (await admin.delete(f"/api/v1/whitelists/{entry['id']}")).status_code == 204
        assert (await admin.get(f"/api/v1/whitelists/{entry['id']}")).status_code == 404
        assert (await admin.delete(f"/api/v1/whitelists/{entry['id']}")).status_code == 404
        assert (await admin.patch("/api/v1/whitelists/999", json={"enabled": False})).status_code == 404

        actions = [(a["action"], a["actor"]) for a in await helpers.audit(admin, entity="whitelist")]
        assert actions.count(("create", "system:config")) == 4
        assert [a for a, _ in actions[4:]] == ["create", "update", "delete"]

        manager = await api_client(app, scopes=["commands.manage"])
        assert (await manager.get("/api/v1/whitelists")).status_code == 403
        assert (await manager.post("/api/v1/whitelists", json=body)).status_code == 403


BAD_RULES = [
    ({"x": "[unclosed"}, "/allowed_params_json/x", "does not compile"),
    ({"x": "(x)\\1"}, "/allowed_params_json/x", "back-references"),
    ({"x": "(?=a)a"}, "/allowed_params_json/x", "does not compile with RE2"),
    ({"x": "a(?<!b)"}, "/allowed_params_json/x", "lookbehind"),
    ({"x": "(a)?(?(1)b|c)"}, "/allowed_params_json/x", "does not compile with RE2"),
    ({"x": "a" * 201}, "/allowed_params_json/x", "longer than 200"),
    ({"x": []}, "/allowed_params_json/x", "non-empty list"),
    ({"x": {"regex": 5}}, "/allowed_params_json/x", "must be a string"),
    ({"x": {"min": 1}}, "/allowed_params_json/x", "expected null"),
    ({"bad name!": None}, "/allowed_params_json", "param name"),
]


@pytest.mark.backends("sqlite")  # pure validation: one backend suffices
async def test_whitelist_rules_are_checked_when_saved(commands_app, api_client):
    async with commands_app() as app:
        admin = await api_client(app, scopes=["admin"])
        for params, pointer, needle in BAD_RULES:
            for method, url, body in (
                ("post", "/api/v1/whitelists", {"system": "s1", "action": "A", "allowed_params_json": params}),
                ("patch", "/api/v1/whitelists/1", {"allowed_params_json": params}),
            ):
                r = await getattr(admin, method)(url, json=body)
                assert r.status_code == 422, (params, r.text)
                assert r.json()["errors"][0]["pointer"] == pointer, params
                assert needle in r.json()["detail"], (params, r.json()["detail"])


async def test_enqueue_applies_the_whitelist(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])

        async def refused(body, pointer, kind="not-whitelisted"):
            r = await c.post("/api/v1/commands", json=body)
            assert r.status_code == 422, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"].endswith(kind), r.json()
            assert pointer in [e["pointer"] for e in r.json()["errors"]], r.json()
            return r.json()

        light = {"target_system": "homeserver", "command": "LIGHT"}
        await refused({"target_system": "homeserver", "command": "REBOOT"}, "/command")
        await refused({"target_system": "nowhere", "command": "LIGHT"}, "/command")
        await refused({**light, "params": {"room": "Kitchen"}}, "/params/room")  # fails its regex
        await refused({**light, "params": {"room": "a" * 21}}, "/params/room")
        await refused({**light, "params": {"level": "dim"}}, "/params/level")  # not in the enum
        await refused({**light, "params": {"colour": "red"}}, "/params/colour")  # not allowed at all
        await refused({**light, "params": {"room": ["kitchen"]}}, "/params/room")
        await refused({**light, "args": ["x" * 1001]}, "/args/0", "validation")
        await refused({**light, "args": ["a"] * 51}, "/args", "validation")
        await refused({**light, "args": ["nul\u0000byte"]}, "/args/0", "validation")
        await refused({**light, "args": [1]}, "/args/0", "validation")
        await refused({**light, "params": {"note": "x" * 4001}}, "/params/note", "validation")
        await refused({**light, "params": {"note": {"deep": "\u0007bell"}}}, "/params/note/deep", "validation")
        # A lone surrogate is valid JSON but not text: refused, not a 500.
        raw = '{"target_system": "homeserver", "command": "LIGHT", "params": {"note": "\\ud800"}}'
        r = await c.post("/api/v1/commands", content=raw.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        # Shape errors from the model: pointers too.
        r = await c.post("/api/v1/commands", json={"target_system": "home server; DROP TABLE x", "command": "LIGHT"})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/target_system"
        r = await c.post("/api/v1/commands", json={**light, "not_before": "2026-01-01T10:00:00"})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/not_before"
        r = await c.post("/api/v1/commands", content=b"\x00\x01binary", headers={"content-type": "application/json"})
        assert r.status_code == 400

        # Accepted: enum values match by their JSON text; any-value params keep Unicode, SQL and HTML as given.
        nasty = "Grüße 🌍 '; DROP TABLE external_commands; -- <script>alert(1)</script>"
        r = await c.post(
            "/api/v1/commands",
            json={
                **light,
                "command": "light",
                "params": {"room": "living_room", "level": 50, "note": nasty},
                "args": ["ünïcode", "<b>"],
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["command"] == "LIGHT" and r.json()["params"]["note"] == nasty
        r = await c.post("/api/v1/commands", json={**light, "params": {"level": "100"}})
        assert r.status_code == 201
        listed = (await c.get("/api/v1/commands")).json()["items"]
        assert len(listed) == 2 and listed[1]["params"]["note"] == nasty and listed[1]["args"] == ["ünïcode", "<b>"]


async def test_narrowed_params_cancel_the_queued_commands_they_no_longer_allow(commands_app, api_client, helpers):
    async with commands_app() as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        light = {"target_system": "homeserver", "command": "LIGHT"}
        leased = (await c.post("/api/v1/commands", json={**light, "params": {"room": "cellar"}})).json()
        assert [x["id"] for x in (await c.get("/api/v1/commands/homeserver")).json()["items"]] == [leased["id"]]
        kitchen = (await c.post("/api/v1/commands", json={**light, "params": {"room": "kitchen"}})).json()
        hall = (await c.post("/api/v1/commands", json={**light, "params": {"room": "hall", "level": "on"}})).json()
        attic = (await c.post("/api/v1/commands", json={**light, "params": {"room": "attic"}})).json()
        await c.post(f"/api/v1/commands/{attic['id']}/cancel")  # cancelled before: stays as it was
        ping = (
            await c.post(
                "/api/v1/commands", json={"target_system": "homeserver", "command": "PING", "params": {"n": "1"}}
            )
        ).json()
        entries = {e["action"]: e for e in (await admin.get("/api/v1/whitelists")).json()["items"]}
        entry = entries["LIGHT"]

        # Unrelated changes re-check nothing.
        r = await admin.patch(f"/api/v1/whitelists/{entry['id']}", json={"description": "lights"})
        assert r.status_code == 200
        spec = {"room": "hall", "level": ["on", "off"]}
        r = await admin.patch(f"/api/v1/whitelists/{entry['id']}", json={"allowed_params_json": spec})
        assert r.status_code == 200, r.text

        items = (await c.get("/api/v1/commands/homeserver", params={"limit": 100})).json()["items"]
        assert sorted(x["id"] for x in items) == sorted([hall["id"], ping["id"]])  # kitchen is not handed out
        states = {x["id"]: x for x in (await c.get("/api/v1/commands")).json()["items"]}
        gone = states[kitchen["id"]]
        assert gone["status"] == "cancelled" and gone["completed_at"]
        assert f"homeserver/LIGHT (id {entry['id']}) no longer allows it" in gone["error"]
        assert "/params/room" in gone["error"] and "'hall'" in gone["error"]
        assert states[leased["id"]]["status"] == "processing"  # already handed out: left to its worker
        assert states[attic["id"]]["error"] == "cancelled through the API"
        cancels = [
            a
            for a in await helpers.audit(admin, entity="command", action="cancel")
            if a["entity_id"] == str(kitchen["id"])
        ]
        update = (await helpers.audit(admin, entity="whitelist", action="update"))[-1]
        assert "allowed_params_json" in update["change"]
        assert len(cancels) == 1 and cancels[0]["actor"] == update["actor"] and update["actor"].startswith("k_")
        assert cancels[0]["change"]["whitelist_id"] == entry["id"] and cancels[0]["change"]["reason"] == gone["error"]

        # Allowing no params at all cancels whatever still carries some.
        on = (await c.post("/api/v1/commands", json={**light, "params": {"room": "hall", "level": "off"}})).json()
        r = await admin.patch(f"/api/v1/whitelists/{entry['id']}", json={"allowed_params_json": {}})
        assert r.status_code == 200
        gone = (await c.get("/api/v1/commands", params={"status": "cancelled"})).json()["items"]
        assert on["id"] in [x["id"] for x in gone]

        # Disabling holds pending commands (released when enabled again); deleting holds them too, and a
        # new entry for the same pair re-checks them against its own rules.
        a = (
            await c.post(
                "/api/v1/commands", json={"target_system": "office", "command": "PRINT", "params": {"doc": "a.pdf"}}
            )
        ).json()
        b = (
            await c.post(
                "/api/v1/commands", json={"target_system": "office", "command": "PRINT", "params": {"doc": "b.txt"}}
            )
        ).json()
        office = entries["PRINT"]
        assert (await admin.patch(f"/api/v1/whitelists/{office['id']}", json={"enabled": False})).status_code == 200
        assert (await c.get("/api/v1/commands/office")).json()["items"] == []
        assert (await admin.delete(f"/api/v1/whitelists/{office['id']}")).status_code == 204
        assert (await c.get("/api/v1/commands/office")).json()["items"] == []
        pending = (await c.get("/api/v1/commands", params={"system": "office", "status": "pending"})).json()["items"]
        assert sorted(x["id"] for x in pending) == sorted([a["id"], b["id"]])
        r = await admin.post(
            "/api/v1/whitelists",
            json={"system": "office", "action": "PRINT", "allowed_params_json": {"doc": r"[a-z]+\.pdf"}},
        )
        assert r.status_code == 201
        assert [x["id"] for x in (await c.get("/api/v1/commands/office")).json()["items"]] == [a["id"]]
        b_now = next(
            x
            for x in (await c.get("/api/v1/commands", params={"system": "office"})).json()["items"]
            if x["id"] == b["id"]
        )
        assert b_now["status"] == "cancelled" and "/params/doc" in b_now["error"]


async def test_a_config_change_of_params_rechecks_queued_commands(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        big = (
            await c.post(
                "/api/v1/commands", json={"target_system": "homeserver", "command": "PING", "params": {"n": "500"}}
            )
        ).json()
        small = (
            await c.post(
                "/api/v1/commands", json={"target_system": "homeserver", "command": "PING", "params": {"n": "5"}}
            )
        ).json()
    changed = [{"system": "homeserver", "action": "PING", "params": {"n": r"\d"}}]
    async with commands_app(whitelist=changed) as app:
        c = await api_client(app, scopes=["commands.manage"])
        items = (await c.get("/api/v1/commands/homeserver")).json()["items"]
        assert [x["id"] for x in items] == [small["id"]]
        gone = next(x for x in (await c.get("/api/v1/commands")).json()["items"] if x["id"] == big["id"])
        assert gone["status"] == "cancelled" and "/params/n" in gone["error"]


async def test_config_seeding_that_narrows_an_entry_rechecks_like_the_api(commands_app, api_client, helpers):
    light = {"target_system": "homeserver", "command": "LIGHT"}
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        leased = (await c.post("/api/v1/commands", json={**light, "params": {"room": "cellar"}})).json()
        assert [x["id"] for x in (await c.get("/api/v1/commands/homeserver")).json()["items"]] == [leased["id"]]
        kitchen = (await c.post("/api/v1/commands", json={**light, "params": {"room": "kitchen"}})).json()
        hall = (await c.post("/api/v1/commands", json={**light, "params": {"room": "hall", "level": "on"}})).json()
    narrowed = [{"system": "homeserver", "action": "light", "params": {"room": "hall", "level": ["on", "off"]}}]
    async with commands_app(whitelist=narrowed) as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        entry = {e["action"]: e for e in (await admin.get("/api/v1/whitelists")).json()["items"]}["LIGHT"]
        assert entry["origin"] == "config"
        states = {x["id"]: x for x in (await c.get("/api/v1/commands")).json()["items"]}
        gone = states[kitchen["id"]]
        # The same outcome as a PATCH through the API: cancelled with the reason, audited per command.
        assert gone["status"] == "cancelled" and gone["completed_at"]
        assert f"homeserver/LIGHT (id {entry['id']}) no longer allows it" in gone["error"]
        assert "/params/room" in gone["error"] and "'hall'" in gone["error"]
        assert states[hall["id"]]["status"] == "pending"
        assert states[leased["id"]]["status"] == "processing"  # already handed out: left to its worker
        cancels = [
            a
            for a in await helpers.audit(admin, entity="command", action="cancel")
            if a["entity_id"] == str(kitchen["id"])
        ]
        update = (await helpers.audit(admin, entity="whitelist", action="update"))[-1]
        assert list(update["change"]) == ["allowed_params_json"] and update["actor"] == "system:config"
        assert len(cancels) == 1 and cancels[0]["actor"] == "system:config"
        assert cancels[0]["change"]["whitelist_id"] == entry["id"] and cancels[0]["change"]["reason"] == gone["error"]
        items = (await c.get("/api/v1/commands/homeserver", params={"limit": 100})).json()["items"]
        assert [x["id"] for x in items] == [hall["id"]]


async def test_idempotency_key(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        other = await api_client(app, scopes=["commands.manage"])
        body = {"target_system": "office", "command": "PRINT", "params": {"doc": "a.pdf"}}
        r1 = await c.post("/api/v1/commands", json=body, headers={"Idempotency-Key": "order-1"})
        assert r1.status_code == 201
        r2 = await c.post("/api/v1/commands", json=body, headers={"Idempotency-Key": "order-1"})
        assert r2.status_code == 200 and r2.headers["Idempotent-Replayed"] == "true"
        assert r2.json()["id"] == r1.json()["id"]
        r3 = await c.post(
            "/api/v1/commands", json={**body, "params": {"doc": "b.pdf"}}, headers={"Idempotency-Key": "order-1"}
        )
        assert r3.status_code == 422 and r3.json()["command_id"] == r1.json()["id"]
        # Keys are scoped to the API key that sent them.
        r4 = await other.post("/api/v1/commands", json=body, headers={"Idempotency-Key": "order-1"})
        assert r4.status_code == 201 and r4.json()["id"] != r1.json()["id"]
        r = await c.post("/api/v1/commands", json=body, headers={"Idempotency-Key": "bad key\twith tab"})
        assert r.status_code == 400
        # Concurrent retries of one request create one command.
        rs = await asyncio.gather(
            *(c.post("/api/v1/commands", json=body, headers={"Idempotency-Key": "order-2"}) for _ in range(6))
        )
        assert sorted(r.status_code for r in rs) == [200] * 5 + [201]
        assert len({r.json()["id"] for r in rs}) == 1
        # Without the header every request is a new command.
        a = await c.post("/api/v1/commands", json=body)
        b = await c.post("/api/v1/commands", json=body)
        assert a.json()["id"] != b.json()["id"]
        assert len((await c.get("/api/v1/commands")).json()["items"]) == 5


async def test_config_changes_apply_at_the_next_start(commands_app, api_client, helpers):
    async with commands_app() as app:
        admin = await api_client(app, scopes=["admin"])
        entries = {e["action"]: e for e in (await admin.get("/api/v1/whitelists")).json()["items"]}
    changed = [{"system": "homeserver", "action": "PING", "params": {"n": "[0-9]{1,5}"}, "enabled": False}]
    async with commands_app(whitelist=changed) as app:
        admin = await api_client(app, scopes=["admin"])
        now = {e["action"]: e for e in (await admin.get("/api/v1/whitelists")).json()["items"]}
        assert now["PING"]["id"] == entries["PING"]["id"]
        assert now["PING"]["allowed_params_json"] == {"n": {"regex": "[0-9]{1,5}"}} and not now["PING"]["enabled"]
        assert "LIGHT" in now  # entries no longer in the config stay
        updates = await helpers.audit(admin, entity="whitelist", action="update")
        assert [u["actor"] for u in updates] == ["system:config"]
        assert json.dumps(updates[0]["change"]).count("from") == 2


@pytest.mark.backends("sqlite")
async def test_an_invalid_regex_in_config_stops_startup(commands_app):
    with pytest.raises(Exception, match=r"commands.*whitelist.*RE2"):
        async with commands_app(whitelist=[{"system": "s", "action": "A", "params": {"p": "(?=a)a+"}}]):
            pass


def test_whitelist_patterns_match_in_linear_time():
    """Patterns run on RE2: shapes that backtrack for seconds in Python's re match in microseconds."""
    import re2

    from chronos_commands.whitelist import check_params, check_pattern, normalize_params_spec

    evil = "(?:a?){24}a{24}"
    assert isinstance(check_pattern(evil), type(re2.compile("a")))
    rules = normalize_params_spec({"x": evil, "y": "(a+)+$", "z": "(a|aa)*b", "w": ".*a.*a.*a.*a.*b"})
    values = {"x": "a" * 24, "y": "a" * 40 + "!", "z": "a" * 60, "w": "a" * 250}
    started = time.perf_counter()
    for _ in range(100):
        problems = check_params(rules, values)
        assert time.perf_counter() - started < 0.5, "a whitelist regex backtracks"
    assert [p.pointer for p in problems] == ["/params/y", "/params/z", "/params/w"]


@pytest.mark.backends("postgresql")
async def test_replicas_seeding_the_same_entry_at_once_both_start(commands_app, monkeypatch):
    """Two replicas starting together both seed the config's entries: when the other one commits its
    entry between this one's look-up and its insert (read committed), this start still succeeds and
    the entry exists once."""
    from sqlalchemy import func, select

    from chronos_commands import whitelist_service as ws
    from chronos_commands.settings import CommandsSettings
    from chronos_commands.state import queue_of

    settings = CommandsSettings.model_validate({"whitelist": [{"system": "race", "action": "GO", "params": {}}]})
    real_add = ws.add_entry
    calls = []

    async def other_replica_first(s, queue, system, action, rules, **kw):
        if not calls:  # the other replica's seeding commits now, in a transaction of its own
            calls.append(action)
            async with queue.ctx.db.write() as other:
                await real_add(other, queue, system, action, rules, **kw)
        return await real_add(s, queue, system, action, rules, **kw)

    async with commands_app() as app:
        queue = queue_of(app.state.chronos)
        monkeypatch.setattr(ws, "add_entry", other_replica_first)
        await ws.seed_from_config(queue, settings)
        async with app.state.chronos.db.read() as s:
            count = await s.execute(
                select(func.count()).select_from(ws.WL).where(ws.WL.c.system == "race", ws.WL.c.action == "GO")
            )
            assert count.scalar() == 1
        assert calls == ["GO"]
