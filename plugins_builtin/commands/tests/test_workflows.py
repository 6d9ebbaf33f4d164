"""Workflows: follow-up commands on completion or failure, once, whitelisted, depth-limited."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from chronos.plugin import TemplateRenderer, TemplateRenderError

from chronos_commands.workflows import render, render_plain, template_errors

# Workflow templates render in the templates plugin's sandbox and pool.
WITH_TEMPLATES = ("commands", "templates")
PING = {"target_system": "homeserver", "command": "PING", "params": {"n": "7", "text": "hi"}}


async def _run(c, body):
    """Enqueue, lease and return the leased command."""
    r = await c.post("/api/v1/commands", json=body)
    assert r.status_code == 201, r.text
    items = (await c.get(f"/api/v1/commands/{body['target_system']}", params={"limit": 100})).json()["items"]
    return next(i for i in items if i["id"] == r.json()["id"])


async def _rule(admin, **fields):
    body = {
        "name": "rule",
        "trigger_command": "PING",
        "on": "completed",
        "action_command": "LIGHT",
        "action_target": "homeserver",
    } | fields
    r = await admin.post("/api/v1/workflows", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def _commands(c, **params):
    return (await c.get("/api/v1/commands", params={"limit": 500, **params})).json()["items"]


async def test_a_completion_enqueues_the_follow_up_once(commands_app, api_client, helpers):
    async with commands_app(WITH_TEMPLATES) as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        rule = await _rule(
            admin,
            params_template_json={
                "room": "{{ params.room | default('hall') }}",
                "level": "{{ result.level }}",
                "note": "PING {{ id }} said {{ result.words | join(' ') }} ({{ params.text | upper }})",
            },
            delay_seconds=120,
        )
        assert rule["on"] == "completed" and rule["params_template_json"]["level"] == "{{ result.level }}"

        item = await _run(c, PING)
        assert [x["command"] for x in await _commands(c)] == ["PING"]  # enqueueing fires nothing
        body = {"result": {"level": 50, "words": ["all", "good"]}, "lease_token": item["lease_token"]}
        before = datetime.now().astimezone()
        assert (await c.post(f"/api/v1/commands/{item['id']}/complete", json=body)).status_code == 200
        follow = [x for x in await _commands(c) if x["command"] == "LIGHT"]
        assert len(follow) == 1
        f = follow[0]
        assert f["params"] == {"room": "hall", "level": 50, "note": f"PING {item['id']} said all good (HI)"}
        assert f["origin"] == "workflow" and f["parent_command_id"] == item["id"]
        assert f["workflow_id"] == rule["id"] and f["workflow_depth"] == 1 and f["status"] == "pending"
        nb = datetime.fromisoformat(f["not_before"].replace("Z", "+00:00"))
        assert before + timedelta(seconds=119) <= nb <= datetime.now(nb.tzinfo) + timedelta(seconds=121)

        # The same completion again, or the command's later retry, never fires the rule twice.
        assert (await c.post(f"/api/v1/commands/{item['id']}/complete", json=body)).status_code == 200
        assert len([x for x in await _commands(c) if x["command"] == "LIGHT"]) == 1
        creates = [
            a
            for a in await helpers.audit(admin, entity="command", action="create")
            if a["change"].get("origin") == "workflow"
        ]
        assert len(creates) == 1 and creates[0]["change"]["workflow_id"] == rule["id"]


async def test_failure_rules_fire_on_final_failure_only(commands_app, api_client, helpers):
    async with commands_app(WITH_TEMPLATES, default_max_attempts=2) as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        await _rule(
            admin,
            on="failed",
            action_command="PRINT",
            action_target="office",
            params_template_json={"doc": "{{ command }} on {{ target }} failed: {{ error }}"},
        )
        await _rule(
            admin,
            name="other target",
            trigger_target="elsewhere",
            on="failed",
            action_command="PRINT",
            action_target="office",
        )
        item = await _run(c, PING)
        r = await c.post(
            f"/api/v1/commands/{item['id']}/fail",
            json={"error": "timeout", "retry": True, "lease_token": item["lease_token"]},
        )
        assert r.json()["status"] == "pending"
        assert [x["command"] for x in await _commands(c)] == ["PING"]  # a retry is not a failure yet
        await helpers.shift(app, [item["id"]], not_before=timedelta(seconds=1))
        items = (await c.get("/api/v1/commands/homeserver")).json()["items"]
        r = await c.post(
            f"/api/v1/commands/{item['id']}/fail",
            json={"error": "timeout again", "retry": True, "lease_token": items[0]["lease_token"]},
        )
        assert r.json()["status"] == "dead"
        prints = [x for x in await _commands(c) if x["command"] == "PRINT"]
        assert len(prints) == 1 and prints[0]["params"] == {"doc": "PING on homeserver failed: timeout again"}


async def test_a_loop_stops_at_the_depth_limit_and_is_audited(commands_app, api_client, helpers):
    async with commands_app(WITH_TEMPLATES, workflow_max_depth=3) as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        await _rule(
            admin,
            name="A to B",
            action_command="PRINT",
            action_target="office",
            params_template_json={"doc": "from {{ id }}"},
        )
        await _rule(
            admin,
            name="B to A",
            trigger_command="PRINT",
            action_command="PING",
            action_target="homeserver",
            params_template_json={"n": "{{ (params.doc.split(' ')[1] | int) % 1000 }}"},
        )
        first = await _run(c, PING)
        r = await c.post(
            f"/api/v1/commands/{first['id']}/complete", json={"result": "ok", "lease_token": first["lease_token"]}
        )
        assert r.status_code == 200
        for _ in range(6):  # work the chain until nothing is left
            progressed = False
            for system in ("homeserver", "office"):
                for item in (await c.get(f"/api/v1/commands/{system}")).json()["items"]:
                    r = await c.post(
                        f"/api/v1/commands/{item['id']}/complete",
                        json={"result": "ok", "lease_token": item["lease_token"]},
                    )
                    assert r.status_code == 200
                    progressed = True
            if not progressed:
                break
        chain = sorted(await _commands(c), key=lambda x: x["id"])
        assert [(x["command"], x["workflow_depth"]) for x in chain] == [
            ("PING", 0),
            ("PRINT", 1),
            ("PING", 2),
            ("PRINT", 3),
        ]
        assert all(x["status"] == "completed" for x in chain)
        stopped = await helpers.audit(admin, entity="workflow", action="stopped")
        assert len(stopped) == 1
        change = stopped[0]["change"]
        assert change["trigger_command_id"] == chain[-1]["id"] and "workflow_max_depth = 3" in change["reason"]
        assert [s["id"] for s in change["chain"]] == [x["id"] for x in chain]


async def test_broken_or_refused_follow_ups_are_audited_and_do_not_block(commands_app, api_client, helpers):
    async with commands_app(WITH_TEMPLATES) as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        await _rule(admin, name="missing var", params_template_json={"note": "{{ result.nothing.here }}"})
        await _rule(admin, name="escape", params_template_json={"note": "{{ ''.__class__.__mro__ }}"})
        await _rule(admin, name="huge", params_template_json={"note": "{{ 'x' * 100000 }}"})
        await _rule(admin, name="mutate", params_template_json={"note": "{{ params.update({'n': 1}) }}"})
        await _rule(admin, name="refused", params_template_json={"room": "NOT VALID"})
        await _rule(admin, name="fine", params_template_json={"room": "hall"})
        item = await _run(c, PING)
        r = await c.post(
            f"/api/v1/commands/{item['id']}/complete", json={"result": {}, "lease_token": item["lease_token"]}
        )
        assert r.status_code == 200 and r.json()["status"] == "completed"
        follow = [x for x in await _commands(c) if x["command"] == "LIGHT"]
        assert [x["params"] for x in follow] == [{"room": "hall"}]
        errors = await helpers.audit(admin, entity="workflow", action="template_error")
        assert len(errors) == 4
        assert any("undefined:" in e["change"]["reason"] for e in errors)
        assert any("unsafe:" in e["change"]["reason"] for e in errors)
        rejected = await helpers.audit(admin, entity="workflow", action="rejected")
        assert len(rejected) == 1 and "/params/room" in rejected[0]["change"]["reason"]


async def test_a_template_rendering_unstorable_params_does_not_fail_the_batch(commands_app, api_client, helpers):
    # PostgreSQL cannot store NUL in text or JSON: quoting the refused params in the audit row
    # used to abort the group-commit transaction, failing every completion that shared it.
    async with commands_app(WITH_TEMPLATES) as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        await _rule(admin, name="nul", params_template_json={"note": "{{ '\\x00' }}"})
        await _rule(admin, name="infinite", params_template_json={"room": "hall", "note": "{{ 1e308 * 10 }}"})
        trigger = (await c.post("/api/v1/commands", json=PING)).json()["id"]
        bystander = (
            await c.post(
                "/api/v1/commands", json={"target_system": "homeserver", "command": "LIGHT", "params": {"room": "hall"}}
            )
        ).json()["id"]
        items = {i["id"]: i for i in (await c.get("/api/v1/commands/homeserver")).json()["items"]}
        # Sent together, the two completions share one transaction.
        rs = await asyncio.gather(
            *(
                c.post(f"/api/v1/commands/{cid}/complete", json={"result": n, "lease_token": items[cid]["lease_token"]})
                for n, cid in enumerate((trigger, bystander))
            )
        )
        assert [r.status_code for r in rs] == [200, 200], [r.text for r in rs]
        states = {x["id"]: x["status"] for x in await _commands(c)}
        assert states == {trigger: "completed", bystander: "completed"}  # no follow-up was enqueued
        rejected = await helpers.audit(admin, entity="workflow", action="rejected")
        assert [r["change"]["workflow"] for r in rejected] == ["nul", "infinite"]
        for row, why in zip(rejected, ("control character U+0000", "not a finite number"), strict=True):
            change = row["change"]
            assert change["trigger_command_id"] == trigger and change["params"] is None
            assert why in change["reason"] and why in change["params_not_stored"], change
            assert "\x00" not in change["reason"]


async def test_a_firing_that_fails_in_the_database_is_isolated(commands_app, api_client, helpers, monkeypatch):
    async with commands_app(WITH_TEMPLATES) as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        broken = await _rule(admin, name="broken", params_template_json={"room": "kitchen"})
        fine = await _rule(admin, name="fine", params_template_json={"room": "hall"})
        engine = helpers.queue(app).workflows
        real_insert = engine.queue.insert

        async def insert(s, new, **kwargs):
            row = await real_insert(s, new, **kwargs)
            if new.workflow_id == broken["id"]:
                # A statement the database refuses after the follow-up was written: on PostgreSQL
                # this aborts the whole transaction unless the firing has its own savepoint.
                await s.execute(text("SELECT * FROM no_such_table"))
            return row

        monkeypatch.setattr(engine.queue, "insert", insert)
        trigger = (await c.post("/api/v1/commands", json=PING)).json()["id"]
        bystander = (
            await c.post(
                "/api/v1/commands", json={"target_system": "homeserver", "command": "LIGHT", "params": {"room": "hall"}}
            )
        ).json()["id"]
        items = {i["id"]: i for i in (await c.get("/api/v1/commands/homeserver")).json()["items"]}
        rs = await asyncio.gather(
            *(
                c.post(f"/api/v1/commands/{cid}/complete", json={"result": 1, "lease_token": items[cid]["lease_token"]})
                for cid in (trigger, bystander)
            )
        )
        assert [r.status_code for r in rs] == [200, 200], [r.text for r in rs]
        follow = [x for x in await _commands(c) if x["origin"] == "workflow"]
        assert [x["params"] for x in follow] == [{"room": "hall"}]  # the broken rule's insert was rolled back
        creates = [
            a
            for a in await helpers.audit(admin, entity="command", action="create")
            if a["change"].get("origin") == "workflow"
        ]
        assert [a["entity_id"] for a in creates] == [str(follow[0]["id"])]
        errors = await helpers.audit(admin, entity="workflow", action="error")
        assert len(errors) == 1 and errors[0]["entity_id"] == str(broken["id"])
        assert errors[0]["change"]["trigger_command_id"] == trigger
        assert "the firing failed" in errors[0]["change"]["reason"]
        # Recorded as the rule's firing (outcome "error"), so it is never retried.
        from sqlalchemy import select

        from chronos_commands.models import WorkflowFiring

        F = WorkflowFiring.__table__
        async with app.state.chronos.db.read() as s:
            firings = (
                await s.execute(select(F.c.workflow_id, F.c.outcome).where(F.c.trigger_command_id == trigger))
            ).all()
        assert sorted(tuple(f) for f in firings) == sorted([(broken["id"], "error"), (fine["id"], "enqueued")])


async def test_workflow_crud(commands_app, api_client):
    async with commands_app(WITH_TEMPLATES) as app:
        admin = await api_client(app, scopes=["admin"])
        rule = await _rule(admin, trigger_command="ping", action_command="light")
        assert rule["trigger_command"] == "PING" and rule["action_command"] == "LIGHT"
        r = await admin.post(
            "/api/v1/workflows",
            json={
                "name": "x",
                "trigger_command": "PING",
                "on": "completed",
                "action_command": "NUKE",
                "action_target": "homeserver",
            },
        )
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/action_command"
        r = await admin.post(
            "/api/v1/workflows",
            json={
                "name": "x",
                "trigger_command": "PING",
                "on": "started",
                "action_command": "LIGHT",
                "action_target": "homeserver",
            },
        )
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/on"
        r = await admin.post(
            "/api/v1/workflows",
            json={
                "name": "x",
                "trigger_command": "PING",
                "on": "completed",
                "action_command": "LIGHT",
                "action_target": "homeserver",
                "params_template_json": {"room": "{{ unclosed"},
            },
        )
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/params_template_json/room"
        r = await admin.patch(
            f"/api/v1/workflows/{rule['id']}", json={"enabled": False, "delay_seconds": 30, "on": "failed"}
        )
        assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["on"] == "failed"
        assert (
            await admin.patch(f"/api/v1/workflows/{rule['id']}", json={"action_target": "office"})
        ).status_code == 422
        assert (await admin.get(f"/api/v1/workflows/{rule['id']}")).json()["delay_seconds"] == 30
        assert len((await admin.get("/api/v1/workflows")).json()["items"]) == 1
        assert (await admin.delete(f"/api/v1/workflows/{rule['id']}")).status_code == 204
        assert (await admin.get(f"/api/v1/workflows/{rule['id']}")).status_code == 404
        manager = await api_client(app, scopes=["commands.manage"])
        assert (await manager.get("/api/v1/workflows")).status_code == 403


# -- the template sandbox (pure) ----------------------------------------------------------------


async def _renderer(chronos_app):
    async with chronos_app(plugins=["templates"]) as app:
        yield app.state.chronos.service(TemplateRenderer)


async def test_single_expressions_keep_their_json_type(chronos_app):
    ctx = {"params": {"n": "3"}, "result": {"count": 4, "items": [1, 2], "ok": True, "none": None}}
    template = {
        "a": "{{ result.count }}",
        "b": "{{ result['items'] }}",
        "c": " {{ result.ok }} ",
        "d": "{{ result.none }}",
        "e": "n={{ params.n }}",
        "f": ["{{ params.n | int + 1 }}", 5],
        "g": "{{ result.count }}{{ result.count }}",
    }
    async for renderer in _renderer(chronos_app):
        out = await render(template, ctx, renderer)
    assert out == {"a": 4, "b": [1, 2], "c": True, "d": None, "e": "n=3", "f": [4, 5], "g": "44"}


SANDBOX_REFUSES = [
    "{{ missing }}",
    "{{ ''.__class__ }}",
    "{{ params.__class__.__init__.__globals__ }}",
    "{{ 'a' * 20000 }}",
    "{{ [1] * 20000 }}",
    "{% for i in range(100000) %}x{% endfor %}",
    "{{ params.pop('n') }}",
    "{{ params.items }}",
    "{% for i in range(1000) %}{{ 'x' * 10 }}{% endfor %}",
    # Work the old in-process renderer did on the event loop, unbounded in time:
    "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
]


@pytest.mark.backends("sqlite")
async def test_the_sandbox_refuses(chronos_app):
    async for renderer in _renderer(chronos_app):
        for template in SANDBOX_REFUSES:
            with pytest.raises((TemplateRenderError, ValueError)):
                await render({"x": template}, {"params": {"n": "1"}}, renderer)


def test_without_the_templates_plugin_only_plain_substitutions_render():
    ctx = {"params": {"n": "3", "room": "hall"}, "result": {"count": 4, "items": [1, {"a": "b"}]}, "id": 9}
    assert render_plain("{{ result.count }}", ctx) == 4
    assert render_plain(" {{ result['items'][1].a }} ", ctx) == "b"
    assert render_plain("PING {{ id }} in {{ params.room }}", ctx) == "PING 9 in hall"
    for template in ("{{ params.room | upper }}", "{{ 2 ** 1000 }}", "{% for i in range(9) %}{% endfor %}"):
        with pytest.raises(ValueError, match="templates plugin"):
            render_plain(template, ctx)
    with pytest.raises(ValueError, match="undefined"):
        render_plain("{{ result.nothing }}", ctx)


async def test_workflow_params_render_in_the_bounded_sandbox(commands_app, api_client, helpers):
    """A rule's template runs in the templates plugin's sandbox: heavy work is stopped, not run."""
    async with commands_app(WITH_TEMPLATES) as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        loops = "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
        await _rule(admin, name="busy", params_template_json={"room": "hall", "note": loops})
        await _rule(admin, name="fine", params_template_json={"room": "{{ params.text | lower }}"})
        item = await _run(c, PING)
        r = await c.post(
            f"/api/v1/commands/{item['id']}/complete", json={"result": {}, "lease_token": item["lease_token"]}
        )
        assert r.status_code == 200, r.text
        assert [x["params"] for x in await _commands(c) if x["command"] == "LIGHT"] == [{"room": "hi"}]
        (error,) = await helpers.audit(admin, entity="workflow", action="template_error")
        assert error["change"]["workflow"] == "busy" and "limit" in error["change"]["reason"]


async def test_without_the_templates_plugin_workflows_substitute_plainly(commands_app, api_client, helpers):
    async with commands_app() as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        await _rule(admin, name="plain", params_template_json={"room": "{{ params.text }}", "note": "n={{ params.n }}"})
        await _rule(admin, name="filter", params_template_json={"room": "{{ params.text | upper }}"})
        item = await _run(c, PING)
        r = await c.post(
            f"/api/v1/commands/{item['id']}/complete", json={"result": {}, "lease_token": item["lease_token"]}
        )
        assert r.status_code == 200, r.text
        follow = [x["params"] for x in await _commands(c) if x["command"] == "LIGHT"]
        assert follow == [{"room": "hi", "note": "n=7"}]
        (error,) = await helpers.audit(admin, entity="workflow", action="template_error")
        assert error["change"]["workflow"] == "filter" and "templates plugin" in error["change"]["reason"]


def test_template_syntax_is_checked_with_pointers():
    errors = template_errors({"ok": "{{ a }}", "bad": {"deeper/x": ["{% if %}"]}, "long": "x" * 5000})
    assert sorted(e["pointer"] for e in errors) == [
        "/params_template_json/bad/deeper~1x/0",
        "/params_template_json/long",
    ]
