"""Leases, lease extensions and consumed calendar entries are audited with their actor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

PING = {"target_system": "homeserver", "command": "ping", "params": {"n": "1"}}


async def test_leases_and_extensions_are_audited_with_the_poller(commands_app, api_client, helpers):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        ids = [(await c.post("/api/v1/commands", json=PING)).json()["id"] for _ in range(2)]
        leased = (await c.get("/api/v1/commands/homeserver", params={"limit": 5})).json()["items"]
        assert sorted(x["id"] for x in leased) == sorted(ids)
        r = await c.post(f"/api/v1/commands/{ids[0]}/extend", json={"lease_token": leased[0]["lease_token"]})
        assert r.status_code == 200, r.text

        leases = await helpers.audit(admin, entity="command", action="lease")
        assert sorted(int(a["entity_id"]) for a in leases) == sorted(ids)
        creator = (await helpers.audit(admin, entity="command", action="create"))[0]["actor"]
        assert all(a["actor"] == creator and a["actor"].startswith("k_") for a in leases)
        assert all(a["change"]["system"] == "homeserver" and a["change"]["attempt"] == 1 for a in leases)
        (extension,) = await helpers.audit(admin, entity="command", action="lease_extend")
        assert extension["entity_id"] == str(ids[0]) and extension["actor"] == creator
        assert extension["change"]["expires_at"]


async def test_consumed_calendar_entries_are_audited_with_their_calendar(
    calendar_app, fake_source, api_client, helpers
):
    src = fake_source()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    src.put("note", "NOTIZ: Gießen fällt aus", start=tomorrow)
    async with calendar_app(src) as app:
        admin = await api_client(app, scopes=["admin"])
        await app.state.runtime.pipeline.run("fake", "cal", full=True)
        consumed = await helpers.audit(admin, entity="event", action="consume")
        assert consumed, "the consumed entry is audited"
        assert all(a["actor"].startswith("source:") for a in consumed)
        assert consumed[0]["change"]["reason"].startswith("consumed")
