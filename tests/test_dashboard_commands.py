"""The operator path the dashboard's commands panel uses: complete or fail a command by hand, without a lease."""

from __future__ import annotations

from chronos.testing import audit_entries

WHITELIST = [{"system": "homeserver", "action": "PING", "params": {"n": r"\d{1,3}"}}]
PING = {"target_system": "homeserver", "command": "PING", "params": {"n": "1"}}


async def test_an_operator_completes_a_leased_command_and_the_worker_then_gets_409(chronos_app, api_client):
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": WHITELIST}}) as app:
        operator = await api_client(app, scopes=["commands.manage"])
        worker = await api_client(app, scopes=["events.read"], systems=["homeserver"])
        command = (await operator.post("/api/v1/commands", json=PING)).json()
        (lease,) = (await worker.get("/api/v1/commands/homeserver")).json()["items"]
        assert lease["id"] == command["id"] and lease["status"] == "processing"

        # A worker-bound key without commands.manage has no operator path.
        assert (await worker.post(f"/api/v1/commands/{command['id']}/manual-complete", json={})).status_code == 403
        r = await operator.post(f"/api/v1/commands/{command['id']}/manual-complete", json={"result": {"by": "hand"}})
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["status"] == "completed" and done["result"] == {"by": "hand"} and done["lease_token"] is None

        late = await worker.post(
            f"/api/v1/commands/{command['id']}/complete", json={"lease_token": lease["lease_token"], "result": 1}
        )
        assert late.status_code == 409, late.text
        late_fail = await worker.post(
            f"/api/v1/commands/{command['id']}/fail", json={"lease_token": lease["lease_token"], "error": "boom"}
        )
        assert late_fail.status_code == 409
        again = await operator.post(f"/api/v1/commands/{command['id']}/manual-fail", json={"error": "too late"})
        assert again.status_code == 409 and again.json()["status_now"] == "completed"

        (entry,) = [a for a in await audit_entries(app, "command", command["id"]) if a["action"].startswith("manual")]
        assert entry["action"] == "manual_complete"
        assert entry["change"] == {"status": "completed", "previous_status": "processing", "manual": True}


async def test_an_operator_fails_a_pending_command_which_can_then_be_retried(chronos_app, api_client):
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": WHITELIST}}) as app:
        operator = await api_client(app, scopes=["commands.manage"])
        command = (await operator.post("/api/v1/commands", json=PING)).json()
        assert command["status"] == "pending"
        r = await operator.post(f"/api/v1/commands/{command['id']}/manual-fail", json={"error": "host retired"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "failed" and r.json()["error"] == "host retired"
        (entry,) = [a for a in await audit_entries(app, "command", command["id"]) if a["action"] == "manual_fail"]
        assert entry["change"]["manual"] is True and entry["change"]["error"] == "host retired"
        retried = await operator.post(f"/api/v1/commands/{command['id']}/retry")
        assert retried.status_code == 200 and retried.json()["status"] == "pending"
        assert (await operator.post("/api/v1/commands/999999/manual-complete", json={})).status_code == 404
        bad = await operator.post(f"/api/v1/commands/{command['id']}/manual-fail", json={"error": ""})
        assert bad.status_code == 422
