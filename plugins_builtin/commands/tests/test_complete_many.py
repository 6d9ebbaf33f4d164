"""POST /api/v1/command-completions: several completions in one request, each decided on its own."""

from __future__ import annotations

import json
from typing import Any

PING = {"target_system": "homeserver", "command": "PING", "params": {"n": "1"}}


async def _enqueue(c, **fields: Any) -> dict[str, Any]:
    r = await c.post("/api/v1/commands", json={**PING, **fields})
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_leased_batch_is_acknowledged_in_one_request(commands_app, api_client, helpers):
    async with commands_app() as app:
        manager = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        ids = [(await _enqueue(manager, params={"n": str(i)}))["id"] for i in range(5)]
        leased = (await manager.get("/api/v1/commands/homeserver", params={"limit": 10})).json()["items"]
        assert sorted(x["id"] for x in leased) == ids
        body = {"items": [{"id": x["id"], "lease_token": x["lease_token"], "result": {"ok": x["id"]}} for x in leased]}
        r = await manager.post("/api/v1/command-completions", json=body)
        assert r.status_code == 200, r.text
        outcomes = r.json()["items"]
        assert [o["id"] for o in outcomes] == [x["id"] for x in leased]  # the request's order
        assert all(o["status"] == 200 and o["problem"] is None for o in outcomes)
        assert all(
            o["command"]["status"] == "completed" and o["command"]["result"] == {"ok": o["id"]} for o in outcomes
        )
        # Each completion is audited on its own; a replay answers the same.
        completes = await helpers.audit(admin, entity="command", action="complete")
        assert sorted(int(a["entity_id"]) for a in completes) == ids
        again = (await manager.post("/api/v1/command-completions", json=body)).json()["items"]
        assert [o["status"] for o in again] == [200] * 5
        assert len(await helpers.audit(admin, entity="command", action="complete")) == 5


async def test_refused_items_do_not_hold_up_the_others(commands_app, api_client):
    async with commands_app() as app:
        manager = await api_client(app, scopes=["commands.manage"])
        home = await api_client(app, scopes=["events.read"], systems=["homeserver"])
        mine = await _enqueue(manager)
        office = await _enqueue(manager, target_system="office", command="PRINT", params={"doc": "a.pdf"})
        (lease,) = (await home.get("/api/v1/commands/homeserver")).json()["items"]
        (office_lease,) = (await manager.get("/api/v1/commands/office")).json()["items"]
        body = {
            "items": [
                {"id": mine["id"], "lease_token": "0" * 32, "result": 1},  # not this lease
                {"id": office["id"], "lease_token": office_lease["lease_token"]},  # another system's command
                {"id": 2**62, "lease_token": lease["lease_token"]},  # no such command
                {"id": mine["id"], "lease_token": lease["lease_token"], "result": {"x": "INFINITY"}},  # not finite
                {"id": mine["id"], "lease_token": lease["lease_token"], "result": "done"},  # the real one
            ]
        }
        raw = json.dumps(body).replace('"INFINITY"', "1e400")
        r = await home.post("/api/v1/command-completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        outcomes = r.json()["items"]
        assert [o["status"] for o in outcomes] == [409, 403, 404, 422, 200], outcomes
        assert outcomes[3]["problem"]["errors"][0]["pointer"] == "/items/3/result/x"
        assert all(o["problem"]["type"].startswith("urn:chronos:problem:") for o in outcomes[:4])
        assert outcomes[4]["command"]["result"] == "done"
        # The office command is untouched: still leased to its own worker.
        listed = {x["id"]: x for x in (await manager.get("/api/v1/commands", params={"limit": 10})).json()["items"]}
        assert listed[office["id"]]["status"] == "processing"
        assert listed[mine["id"]]["status"] == "completed"


async def test_the_request_itself_is_validated(commands_app, api_client):
    async with commands_app() as app:
        manager = await api_client(app, scopes=["commands.manage"])
        nobody = await api_client(app, scopes=["events.read"])
        item = {"id": 1, "lease_token": "0" * 32}
        for body in ({"items": []}, {"items": [item] * 101}, {"items": [{"id": 1}]}, {"items": [{**item, "x": 1}]}):
            r = await manager.post("/api/v1/command-completions", json=body)
            assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
        assert (await nobody.post("/api/v1/command-completions", json={"items": [item]})).status_code == 403
