"""Signed inbound requests: a client with a shared secret instead of an API key, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest

from chronos.plugin import webhook_signing
from chronos.testing import audit_entries, client
from webhooks_support import webhooks_config

CLIENTS = [
    {"name": "calendar-bot", "scopes": ["events.write"], "secret_env": "BOT_WEBHOOK_SECRET"},
    {"name": "homeserver", "scopes": [], "systems": ["homeserver"], "secret_env": "HOME_WEBHOOK_SECRET"},
]
WHITELIST = [{"system": "homeserver", "action": "PING", "params": {"n": r"\d{1,3}"}}]


@pytest.fixture
def secrets(monkeypatch):
    old, bot, home = webhook_signing.new_secret(), webhook_signing.new_secret(), webhook_signing.new_secret()
    monkeypatch.setenv("BOT_WEBHOOK_SECRET", f"{bot} {old}")  # rotating: both accepted
    monkeypatch.setenv("HOME_WEBHOOK_SECRET", home)
    return {"bot": bot, "old": old, "home": home}


def signed(secret, body, webhook_id="msg_1", ts=None, *, x_only=False):
    raw = json.dumps(body).encode()
    headers = webhook_signing.signature_headers(
        [webhook_signing.secret_key(secret)], webhook_id, int(ts or time.time()), raw
    )
    headers["Content-Type"] = "application/json"
    if x_only:
        for h in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            headers.pop(h)
    return raw, headers


def config():
    return {**webhooks_config(inbound_clients=CLIENTS), "commands": {"whitelist": WHITELIST}}


async def test_a_signed_event_is_created_once_and_a_replay_gets_the_first_answer(chronos_app, secrets):
    async with chronos_app(plugins=["webhooks", "events", "normalize"], config=config()) as app:
        event = {"title": "Lunch", "start": "2030-03-04T12:00:00+01:00"}
        raw, headers = signed(secrets["bot"], event, "msg_lunch")
        async with client(app) as c:
            first = await c.post("/api/v1/events", content=raw, headers=headers)
            assert first.status_code == 201, first.text
            again = await c.post("/api/v1/events", content=raw, headers=headers)
            assert again.status_code == 201 and again.json() == first.json()
            assert again.headers["webhook-replayed"] == "true"
            get_headers = webhook_signing.signature_headers(
                [webhook_signing.secret_key(secrets["bot"])], "msg_list", int(time.time()), b""
            )
            listed = await c.get("/api/v1/events", headers=get_headers)
            assert listed.status_code == 403  # the client has events.write only
            # The old secret still works while rotating; X-Signature alone too.
            raw2, headers2 = signed(secrets["old"], {**event, "title": "Tea"}, x_only=True)
            r = await c.post("/api/v1/events", content=raw2, headers=headers2)
            assert r.status_code == 201 and r.json()["title"] == "Tea"
        creates = [e for e in await audit_entries(app, "event") if e["action"] == "create"]
        assert [e["actor"] for e in creates] == ["client:calendar-bot", "client:calendar-bot"]


@pytest.mark.parametrize("case", ["stale", "future", "forged", "unknown-secret", "tampered-body", "missing-id"])
async def test_forged_and_stale_signatures_are_401(chronos_app, secrets, case):
    async with chronos_app(plugins=["webhooks", "events", "normalize"], config=config()) as app:
        event = {"title": "Lunch", "start": "2030-03-04T12:00:00+01:00"}
        secret, ts = secrets["bot"], None
        if case == "stale":
            ts = time.time() - 310
        elif case == "future":
            ts = time.time() + 310
        elif case == "unknown-secret":
            secret = webhook_signing.new_secret()
        raw, headers = signed(secret, event, ts=ts)
        if case == "forged":
            headers["webhook-signature"] = "v1," + "A" * 43 + "="
        elif case == "tampered-body":
            raw = raw.replace(b"Lunch", b"Lurch")
        elif case == "missing-id":
            headers.pop("webhook-id")
        async with client(app) as c:
            r = await c.post("/api/v1/events", content=raw, headers=headers)
        assert r.status_code == 401 and "signature was refused" in r.json()["detail"]


async def test_a_signed_command_callback(chronos_app, api_client, secrets):
    async with chronos_app(plugins=["webhooks", "commands"], config=config()) as app:
        admin = await api_client(app, scopes=["commands.manage"])
        cmd = (
            await admin.post(
                "/api/v1/commands", json={"target_system": "homeserver", "command": "PING", "params": {"n": "1"}}
            )
        ).json()
        token = (await admin.get("/api/v1/commands/homeserver")).json()["items"][0]["lease_token"]
        body = {"result": {"ok": True}, "lease_token": token}
        raw, headers = signed(secrets["home"], body, "msg_done")
        async with client(app) as c:
            r = await c.post(f"/api/v1/commands/{cmd['id']}/complete", content=raw, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "completed"
            replay = await c.post(f"/api/v1/commands/{cmd['id']}/complete", content=raw, headers=headers)
            assert replay.json() == r.json() and replay.headers["webhook-replayed"] == "true"
