"""Catch-up after downtime: a command later than its whitelist entry's grace is missed, not run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from chronos import testing as kit

GRACE = [
    {"system": "homeserver", "action": "PING", "params": {"n": r"\d{1,3}"}, "grace_seconds": 300},
    {"system": "homeserver", "action": "LIGHT", "params": {"room": None}},  # no grace: no limit
]
COMMAND_TABLES = ["external_commands", "whitelists", "workflows", "commands_workflow_firings"]


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


async def _enqueue(c: Any, command: str, not_before: str, **params: str) -> int:
    r = await c.post(
        "/api/v1/commands",
        json={"target_system": "homeserver", "command": command, "params": params, "not_before": not_before},
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _get(c: Any, command_id: int) -> dict[str, Any]:
    r = await c.get(f"/api/v1/commands/homeserver/{command_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _poll(c: Any, limit: int = 10) -> list[dict[str, Any]]:
    r = await c.get("/api/v1/commands/homeserver", params={"limit": limit})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_within_grace_is_handed_out_beyond_is_missed_with_reason_and_audit(chronos_app, api_client, helpers):
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": GRACE}}) as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        on_time = await _enqueue(c, "PING", _ago(seconds=60), n="1")
        late = await _enqueue(c, "PING", _ago(hours=3, minutes=12, seconds=5), n="2")
        late_light = await _enqueue(c, "LIGHT", _ago(days=3), room="hall")  # null grace: runs however late

        leased = await _poll(c)
        assert sorted(x["id"] for x in leased) == sorted([on_time, late_light])

        got = await _get(c, late)
        assert got["status"] == "missed" and got["attempts"] == 0 and got["lease_token"] is None
        assert got["error"].startswith("missed its time by 3 h 12 min (grace 300 s)"), got["error"]
        assert got["completed_at"] is not None

        listed = (await c.get("/api/v1/commands", params={"status": "missed"})).json()["items"]
        assert [x["id"] for x in listed] == [late]

        (audit,) = await helpers.audit(admin, entity="command", action="missed")
        assert audit["entity_id"] == str(late) and audit["actor"] == "system:commands"
        assert audit["change"]["grace_seconds"] == 300 and audit["change"]["previous_status"] == "pending"
        assert audit["change"]["late_seconds"] >= 3 * 3600 + 12 * 60
        assert audit["change"]["reason"] == got["error"]

        # Nothing is handed out later either; a retry makes it due now, and it runs.
        assert await _poll(c) == []
        r = await c.post(f"/api/v1/commands/{late}/retry")
        assert r.status_code == 200 and r.json()["status"] == "pending", r.text
        assert [x["id"] for x in await _poll(c)] == [late]


async def test_many_late_commands_are_missed_together_and_the_due_ones_still_leased(chronos_app, api_client, helpers):
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": GRACE}}) as app:
        c = await api_client(app, scopes=["commands.manage"])
        ids = await helpers.enqueue_many(app, 30, command="PING")
        await helpers.shift(app, ids[:25], not_before=timedelta(minutes=6))
        leased = await _poll(c, limit=3)
        # The 25 late ones are older and would come first; they are missed, the others are leased.
        assert sorted(x["id"] for x in leased) == ids[25:28]
        missed = (await c.get("/api/v1/commands", params={"status": "missed", "limit": 100})).json()["items"]
        assert sorted(x["id"] for x in missed) == ids[:25]
        assert all(x["error"].startswith("missed its time by 6 min") for x in missed)


async def test_grace_changed_by_patch_applies_to_pending_commands(chronos_app, api_client):
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": GRACE}}) as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        entries = (await admin.get("/api/v1/whitelists", params={"system": "homeserver"})).json()["items"]
        by_action = {e["action"]: e for e in entries}
        assert by_action["PING"]["grace_seconds"] == 300 and by_action["LIGHT"]["grace_seconds"] is None

        light = await _enqueue(c, "LIGHT", _ago(minutes=20), room="hall")
        ping = await _enqueue(c, "PING", _ago(minutes=20), n="1")
        r = await admin.patch(f"/api/v1/whitelists/{by_action['LIGHT']['id']}", json={"grace_seconds": 60})
        assert r.status_code == 200 and r.json()["grace_seconds"] == 60, r.text
        r = await admin.patch(f"/api/v1/whitelists/{by_action['PING']['id']}", json={"grace_seconds": None})
        assert r.status_code == 200 and r.json()["grace_seconds"] is None, r.text

        assert [x["id"] for x in await _poll(c)] == [ping]
        got = await _get(c, light)
        assert got["status"] == "missed" and "(grace 60 s)" in got["error"]


@pytest.mark.parametrize("bad", [-1, 1.5, "300", 366 * 86_400 + 1])
async def test_grace_must_be_a_whole_number_of_seconds(chronos_app, api_client, bad):
    async with chronos_app(plugins=["commands"]) as app:
        admin = await api_client(app, scopes=["admin"])
        r = await admin.post(
            "/api/v1/whitelists", json={"system": "homeserver", "action": "PING", "grace_seconds": bad}
        )
        assert r.status_code == 422, r.text


async def test_disabled_entry_holds_late_commands_and_the_job_marks_them_once_enabled(chronos_app, api_client, helpers):
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": GRACE}}) as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        late = await _enqueue(c, "PING", _ago(hours=2), n="1")
        ping = next(e for e in (await admin.get("/api/v1/whitelists")).json()["items"] if e["action"] == "PING")
        await admin.patch(f"/api/v1/whitelists/{ping['id']}", json={"enabled": False})
        await helpers.queue(app).recover_all()
        assert (await _get(c, late))["status"] == "pending"
        await admin.patch(f"/api/v1/whitelists/{ping['id']}", json={"enabled": True})
        await helpers.queue(app).recover_all()  # the commands.recover job, with no poll at all
        assert (await _get(c, late))["status"] == "missed"


async def test_a_missed_command_fires_its_failed_rules_once_and_not_its_completed_rules(
    chronos_app, api_client, helpers
):
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": GRACE}}) as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        rule = {"trigger_command": "PING", "action_command": "LIGHT", "action_target": "homeserver"}
        on_failed = await admin.post(
            "/api/v1/workflows",
            json=rule | {"name": "alarm", "on": "failed", "params_template_json": {"room": "{{ status }}:{{ id }}"}},
        )
        on_completed = await admin.post("/api/v1/workflows", json=rule | {"name": "done", "on": "completed"})
        assert on_failed.status_code == 201 and on_completed.status_code == 201, on_failed.text
        late = [await _enqueue(c, "PING", _ago(hours=2), n=str(n)) for n in (1, 2)]

        assert await _poll(c) == []  # the two PINGs are missed; their follow-ups are due from now on
        leased = await _poll(c)
        assert sorted(x["params"]["room"] for x in leased) == sorted(f"missed:{i}" for i in late)
        assert all(x["origin"] == "workflow" and x["parent_command_id"] in late for x in leased)
        assert all(x["workflow_id"] == on_failed.json()["id"] for x in leased)
        assert [(await _get(c, i))["status"] for i in late] == ["missed", "missed"]

        # The recovery job finds nothing new to miss: no second firing.
        await helpers.queue(app).recover_all()
        workflow_made = (await c.get("/api/v1/commands", params={"origin": "workflow"})).json()["items"]
        assert len(workflow_made) == 2


async def test_missed_commands_are_published_to_the_outbox(chronos_app, api_client):
    config = {"commands": {"whitelist": GRACE}, "network": {"allow": ["127.0.0.1/32"]}}
    async with chronos_app(plugins=["webhooks", "commands"], config=config) as app:
        c = await api_client(app, scopes=["commands.manage"])
        late = await _enqueue(c, "PING", _ago(hours=1), n="7")
        assert await _poll(c) == []
        async with app.state.chronos.db.read() as s:
            rows = (await s.execute(text("SELECT event_type, payload FROM webhooks_outbox ORDER BY id"))).all()
        published = [(kind, payload) for kind, payload in rows if kind.startswith("command.")]
        assert [kind for kind, _ in published] == ["command.missed"]
        payload = published[0][1]
        payload = payload if isinstance(payload, dict) else json.loads(payload)
        assert payload["id"] == late and payload["status"] == "missed"
        assert payload["error"].startswith("missed its time by 1 h")


async def test_the_revision_downgrades_and_upgrades(chronos_app, api_client, database):
    from chronos_commands.plugin import register_migrations

    migs = register_migrations()
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": GRACE}}) as app:
        c = await api_client(app, scopes=["commands.manage"])
        late = await _enqueue(c, "PING", _ago(hours=1), n="1")
        assert await _poll(c) == []
    await kit.downgrade_database(database, migs, "commands", "commands0003")
    off = {"database": {"migrate_on_start": False}}
    async with chronos_app(plugins=["commands"], config=off) as app:
        db = app.state.chronos.db
        async with db.read() as s:
            status = (await s.execute(text(f"SELECT status FROM external_commands WHERE id = {late}"))).scalar()
            columns = (await s.execute(text("SELECT * FROM whitelists"))).keys()
        assert status == "failed"  # a missed command was not run
        assert "grace_seconds" not in columns
        with pytest.raises(IntegrityError):
            async with db.write() as s:
                await s.execute(text(f"UPDATE external_commands SET status = 'missed' WHERE id = {late}"))
    assert list(await kit.migrate_database(database, migs)) == ["commands"]
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": GRACE}}) as app:
        db = app.state.chronos.db
        async with db.write() as s:
            await s.execute(text(f"UPDATE external_commands SET status = 'missed' WHERE id = {late}"))
            if database.backend == "sqlite":
                sql = (await s.execute(text("SELECT sql FROM sqlite_master WHERE name = 'external_commands'"))).scalar()
                assert "AUTOINCREMENT" in sql
        assert await kit.schema_drift(database, COMMAND_TABLES) == []


async def test_a_command_whose_lease_expired_past_its_grace_is_missed_not_run_again(chronos_app, api_client, helpers):
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": GRACE}}) as app:
        c = await api_client(app, scopes=["commands.manage"])
        cid = await _enqueue(c, "PING", _ago(seconds=30), n="1")
        assert [x["id"] for x in await _poll(c)] == [cid]
        # The worker went away: its lease ran out, and the command's time is now 10 min past.
        await helpers.shift(app, [cid], lease_expires_at=timedelta(minutes=1), not_before=timedelta(minutes=10))
        assert await _poll(c) == []  # the poll recovers the lease; the next hand-out would be too late
        got = await _get(c, cid)
        assert got["status"] == "missed" and got["attempts"] == 1
        assert got["error"].startswith("missed its time by 10 min"), got["error"]
