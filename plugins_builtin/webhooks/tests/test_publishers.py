"""Other plugins publish through the outbox: the command queue's outcomes, stored event changes."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

from chronos.plugin import EventDraft
from chronos.testing import FakeSource, fake_source_plugin, sync_now
from webhooks_support import dispatch, webhooks_config

WHITELIST = [{"system": "homeserver", "action": "PING", "params": {"n": r"\d{1,3}"}, "max_attempts": 1}]


async def test_command_outcomes_are_published(chronos_app, api_client, receiver):
    config = {**webhooks_config(), "commands": {"whitelist": WHITELIST}}
    async with chronos_app(plugins=["webhooks", "commands"], config=config) as app:
        c = await api_client(app, scopes=["webhooks.manage", "commands.manage"])
        r = await c.post("/api/v1/webhooks", json={"url": receiver.url, "event_types": ["command.*"]})
        assert r.status_code == 201
        ids = []
        for n in ("1", "2"):
            r = await c.post(
                "/api/v1/commands", json={"target_system": "homeserver", "command": "PING", "params": {"n": n}}
            )
            ids.append(r.json()["id"])
        leased = (await c.get("/api/v1/commands/homeserver", params={"limit": 5})).json()["items"]
        tokens = {x["id"]: x["lease_token"] for x in leased}
        r = await c.post(
            f"/api/v1/commands/{ids[0]}/complete", json={"result": {"ok": 1}, "lease_token": tokens[ids[0]]}
        )
        assert r.status_code == 200, r.text
        r = await c.post(f"/api/v1/commands/{ids[1]}/fail", json={"error": "boom", "lease_token": tokens[ids[1]]})
        assert r.status_code == 200, r.text
        await dispatch(app)
        got = sorted((json.loads(x.body) for x in receiver.received), key=lambda b: b["data"]["id"])
        assert [(b["type"], b["data"]["id"]) for b in got] == [
            ("command.completed", ids[0]),
            ("command.failed", ids[1]),
        ]
        assert got[0]["data"]["result"] == {"ok": 1} and got[1]["data"]["error"] == "boom"


async def test_stored_event_changes_are_published_and_unchanged_batches_publish_nothing(
    chronos_app, api_client, receiver
):
    source = FakeSource(["team"])
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    source.add(EventDraft(uid="a", title="Standup", start=start, end=start.replace(hour=10)))
    plugins = ["webhooks", "events", fake_source_plugin(source)]
    async with chronos_app(plugins=plugins, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await c.post("/api/v1/webhooks", json={"url": receiver.url, "event_types": ["event.*"]})
        await sync_now(app, "fake", "team")
        await sync_now(app, "fake", "team")  # unchanged: nothing new
        source.remove("a")
        await sync_now(app, "fake", "team")
        await dispatch(app)
        got = [json.loads(x.body) for x in receiver.received]
        assert sorted(b["type"] for b in got) == ["event.created", "event.deleted"]
        assert {b["data"]["uid"] for b in got} == {"a"} and got[0]["data"]["calendar_id"] == "team"


async def test_mail_that_fails_for_good_is_published(chronos_app, api_client, receiver):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    mail = {
        "from": "Chronos <chronos@example.com>",
        "smtp": {"host": "127.0.0.1", "port": closed_port, "starttls": False, "timeout_seconds": 2},
        "retry": {"base_seconds": 0, "max_attempts": 1},
    }
    async with chronos_app(plugins=["webhooks", "mail"], config={**webhooks_config(), "mail": mail}) as app:
        c = await api_client(app, scopes=["webhooks.manage", "mail.send"])
        await c.post("/api/v1/webhooks", json={"url": receiver.url, "event_types": ["mail.failed"]})
        r = await c.post("/api/v1/mail/send", json={"to": ["ada@example.com"], "subject": "Hi", "text": "Hello"})
        assert r.status_code == 202, r.text
        jobs = app.state.chronos.jobs
        running = jobs.running.get("mail.send")
        if running is not None:
            await running
        await jobs.run_now("mail.send")
        await dispatch(app)
        (got,) = [json.loads(x.body) for x in receiver.received]
        assert got["type"] == "mail.failed" and got["data"]["delivery_id"] == r.json()["id"]
        assert got["data"]["attempts"] == 1 and got["data"]["error"]


async def test_a_failed_sync_run_is_published(chronos_app, api_client, receiver):
    source = FakeSource(["team"])
    source.fail_at = 0
    plugins = ["webhooks", "events", fake_source_plugin(source)]
    async with chronos_app(plugins=plugins, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await c.post("/api/v1/webhooks", json={"url": receiver.url, "event_types": ["sync.*"]})
        run = await sync_now(app, "fake", "team")
        await dispatch(app)
        (got,) = [json.loads(x.body) for x in receiver.received]
        assert got["type"] == "sync.failed" and got["data"]["calendar_id"] == "team"
        assert "connection lost" in got["data"]["error"] and got["data"]["run_id"] == run.id


async def test_api_edits_are_published(chronos_app, api_client, receiver):
    async with chronos_app(plugins=["webhooks", "events", "normalize"], config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage", "events.write", "events.read"])
        await c.post("/api/v1/webhooks", json={"url": receiver.url, "event_types": ["event.*"]})
        created = (await c.post("/api/v1/events", json={"title": "Lunch", "start": "2030-03-04T12:00:00+01:00"})).json()
        assert (await c.patch(f"/api/v1/events/{created['id']}", json={"title": "Brunch"})).status_code == 200
        assert (await c.delete(f"/api/v1/events/{created['id']}")).status_code == 204
        await dispatch(app)
        got = sorted((json.loads(x.body) for x in receiver.received), key=lambda b: b["timestamp"])
        assert [(b["type"], b["data"]["title"]) for b in got] == [
            ("event.created", "Lunch"),
            ("event.updated", "Brunch"),
            ("event.deleted", "Brunch"),
        ]


async def test_changes_nobody_takes_are_not_published(chronos_app, api_client, receiver):
    from sqlalchemy import func, select

    from chronos_webhooks.models import OutboxRow

    source = FakeSource(["team", "home"])
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    plugins = ["webhooks", "events", fake_source_plugin(source)]
    async with chronos_app(plugins=plugins, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await c.post("/api/v1/webhooks", json={"url": receiver.url, "event_types": ["command.*", "sync.*"]})
        await c.post("/api/v1/webhooks", json={"url": receiver.url, "event_types": ["event.*"], "calendars": ["home"]})
        for i, cal in enumerate(("team", "home")):
            source.add(EventDraft(uid=f"e{i}", title=cal, start=start, end=start.replace(hour=10)), calendar=cal)
            await sync_now(app, "fake", cal)

        async with app.state.chronos.db.read() as s:
            stored = (
                await s.execute(select(OutboxRow.calendar_id, func.count()).group_by(OutboxRow.calendar_id))
            ).all()
        assert stored == [("home", 1)]  # the team calendar's change had no taker: not published
        await dispatch(app)
        assert [json.loads(x.body)["data"]["title"] for x in receiver.received] == ["home"]


#: Adds an endpoint for event.* through the service, in a process of its own on the same database.
ADD_ENDPOINT = """
import asyncio, json, sys
from chronos.testing import TestDatabase, make_test_app, running_app
from chronos_webhooks.schemas import WebhookIn
from chronos_webhooks.service import create_endpoint

async def main():
    db = TestDatabase(*json.loads(sys.argv[1]))
    config = {"network": {"allow": ["127.0.0.1/32"]}}
    async with running_app(make_test_app(db, ["webhooks"], config)) as app:
        await create_endpoint(app.state.chronos, WebhookIn(url=sys.argv[2], event_types=["event.*"]), None)

asyncio.run(main())
"""


async def test_an_endpoint_another_process_adds_takes_the_next_batch(chronos_app, database, receiver):
    """A sync that found no subscriber keeps that answer only until an endpoint changes, in any process."""
    import asyncio
    import subprocess
    import sys

    from sqlalchemy import select

    from chronos_webhooks.models import OutboxRow

    source = FakeSource(["team"])
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    source.add(EventDraft(uid="before", title="Before", start=start, end=start.replace(hour=10)))
    plugins = ["webhooks", "events", fake_source_plugin(source)]
    async with chronos_app(plugins=plugins, config=webhooks_config()) as app:
        await sync_now(app, "fake", "team")  # nobody subscribes: nothing published
        await sync_now(app, "fake", "team", full=True)
        args = json.dumps([database.backend, database.url, database.schema])
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", ADD_ENDPOINT, args, receiver.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        source.add(EventDraft(uid="after", title="After", start=start, end=start.replace(hour=11)))
        await sync_now(app, "fake", "team")
        async with app.state.chronos.db.read() as s:
            published = (await s.execute(select(OutboxRow.event_type, OutboxRow.payload))).all()
        assert [(kind, payload["title"]) for kind, payload in published] == [("event.created", "After")]


async def test_the_outbox_tells_producers_whether_anyone_takes_a_type(chronos_app, api_client, receiver):
    """``Outbox.subscribed``: enabled endpoints' type and calendar filters decide, at once after a change."""
    from chronos.plugin import Outbox

    async with chronos_app(plugins=["webhooks"], config=webhooks_config()) as app:
        ctx = app.state.chronos
        outbox = ctx.service(Outbox)

        async def takes(event_type: str, calendar: str | None = None) -> bool:
            async with ctx.db.read() as s:
                return await outbox.subscribed(s, event_type, calendar)

        assert not await takes("event.created")
        c = await api_client(app, scopes=["webhooks.manage"])
        r = await c.post("/api/v1/webhooks", json={"url": receiver.url, "event_types": ["sync.*"]})
        assert r.status_code == 201, r.text
        assert await takes("sync.failed") and not await takes("event.created")
        r = await c.post(
            "/api/v1/webhooks", json={"url": receiver.url, "event_types": ["event.*"], "calendars": ["home"]}
        )
        hook = r.json()["id"]
        assert await takes("event.created")  # for any calendar
        assert await takes("event.created", "home") and not await takes("event.created", "team")
        r = await c.patch(f"/api/v1/webhooks/{hook}", json={"enabled": False})
        assert r.status_code == 200, r.text
        assert not await takes("event.created") and await takes("sync.failed")
