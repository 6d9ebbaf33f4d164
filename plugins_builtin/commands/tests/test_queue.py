"""The command queue through HTTP: leasing, callbacks, status codes, recovery, retries."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

PING = {"target_system": "homeserver", "command": "ping", "params": {"n": "1"}}


async def _enqueue(c, body=PING, key=None):
    headers = {"Idempotency-Key": key} if key else {}
    r = await c.post("/api/v1/commands", json=body, headers=headers)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def _poll(c, system="homeserver", **params):
    r = await c.get(f"/api/v1/commands/{system}", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_enqueue_lease_complete_roundtrip(commands_app, api_client, helpers):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        cmd = await _enqueue(c)
        assert cmd["command"] == "PING" and cmd["status"] == "pending" and cmd["attempts"] == 0
        assert cmd["created_at"].endswith("Z") and cmd["origin"] == "api"

        leased = await _poll(c, limit=5, lease_seconds=30)
        assert [x["id"] for x in leased] == [cmd["id"]]
        got = leased[0]
        assert got["status"] == "processing" and got["attempts"] == 1 and got["lease_token"]
        expires = datetime.fromisoformat(got["lease_expires_at"].replace("Z", "+00:00"))
        assert timedelta(seconds=20) < expires - datetime.now(expires.tzinfo) <= timedelta(seconds=31)
        assert await _poll(c) == []  # leased commands are not handed out again

        body = {"result": {"ok": True, "text": "größer <b>"}, "lease_token": got["lease_token"]}
        r1 = await c.post(f"/api/v1/commands/{cmd['id']}/complete", json=body)
        assert r1.status_code == 200, r1.text
        assert r1.json()["status"] == "completed" and r1.json()["result"] == body["result"]
        assert r1.json()["completed_at"] and r1.json()["lease_expires_at"] is None
        # Completing twice with the same body gives the same answer.
        r2 = await c.post(f"/api/v1/commands/{cmd['id']}/complete", json=body)
        assert r2.status_code == 200 and r2.json() == r1.json()
        # A replay needs the token of the lease that completed it: without one the body is invalid,
        # with another one it is not the same call.
        r3 = await c.post(f"/api/v1/commands/{cmd['id']}/complete", json={"result": body["result"]})
        assert r3.status_code == 422 and r3.json()["errors"][0]["pointer"] == "/lease_token"
        r3 = await c.post(f"/api/v1/commands/{cmd['id']}/complete", json={**body, "lease_token": "someone-else"})
        assert r3.status_code == 409 and "another lease" in r3.json()["detail"]
        # A different result, or fail after complete: conflict.
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/complete", json={"result": {"ok": False}, "lease_token": got["lease_token"]}
        )
        assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/fail", json={"error": "late", "lease_token": got["lease_token"]}
        )
        assert r.status_code == 409 and r.json()["status_now"] == "completed"

        actions = [(a["entity_id"], a["action"]) for a in await helpers.audit(admin, entity="command")]
        assert actions == [(str(cmd["id"]), "create"), (str(cmd["id"]), "lease"), (str(cmd["id"]), "complete")]


async def test_complete_after_fail_is_a_conflict(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        cmd = await _enqueue(c)
        token = (await _poll(c))[0]["lease_token"]
        r = await c.post(f"/api/v1/commands/{cmd['id']}/fail", json={"error": "boom", "lease_token": token})
        assert r.status_code == 200 and r.json()["status"] == "failed" and r.json()["error"] == "boom"
        # The same failure report again is answered the same.
        again = await c.post(f"/api/v1/commands/{cmd['id']}/fail", json={"error": "boom", "lease_token": token})
        assert again.status_code == 200 and again.json() == r.json()
        r = await c.post(f"/api/v1/commands/{cmd['id']}/complete", json={"result": 1, "lease_token": token})
        assert r.status_code == 409
        r = await c.post(f"/api/v1/commands/{cmd['id']}/fail", json={"error": "other", "lease_token": token})
        assert r.status_code == 409


async def test_unknown_ids_and_systems(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        for verb, body in (
            ("complete", {"lease_token": "t"}),
            ("fail", {"error": "x", "lease_token": "t"}),
            ("extend", {"lease_token": "t"}),
            ("retry", None),
            ("cancel", None),
        ):
            r = await c.post(f"/api/v1/commands/987654/{verb}", json=body)
            assert r.status_code == 404, (verb, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        r = await c.get("/api/v1/commands/no-such-system")
        assert r.status_code == 404 and r.json()["type"].endswith("unknown-system")
        r = await c.get("/api/v1/commands/bad%20system")
        assert r.status_code == 422


async def test_one_command_is_read_under_its_system(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        ping = await _enqueue(c)
        office = await _enqueue(c, {"target_system": "office", "command": "PRINT", "params": {"doc": "a"}})
        (leased,) = await _poll(c)

        r = await c.get(f"/api/v1/commands/homeserver/{ping['id']}")
        assert r.status_code == 200, r.text
        assert r.json() == leased  # the poll's view: processing, attempt 1, its lease token
        r = await c.get(f"/api/v1/commands/office/{office['id']}")
        assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["params"] == {"doc": "a"}

        for path in (f"homeserver/{office['id']}", "homeserver/987654", f"nowhere/{ping['id']}"):
            r = await c.get(f"/api/v1/commands/{path}")
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", path
            assert r.json()["type"].endswith("not-found"), r.text
        for path in ("homeserver/0", f"bad%20system/{ping['id']}", f"homeserver/{2**63}"):
            assert (await c.get(f"/api/v1/commands/{path}")).status_code == 422, path
        # Only digits make a command id: the callbacks' paths stay theirs (GET there is 405, not a lookup).
        assert (await c.get("/api/v1/commands/homeserver/x")).status_code == 404
        r = await c.get(f"/api/v1/commands/{ping['id']}/extend")
        assert r.status_code == 405 and r.headers["allow"] == "POST", r.headers

        # A worker's key bound to its system reads that system's commands only; other keys need the scope.
        worker = await api_client(app, scopes=["events.read"], systems=["homeserver"])
        assert (await worker.get(f"/api/v1/commands/homeserver/{ping['id']}")).json()["id"] == ping["id"]
        r = await worker.get(f"/api/v1/commands/office/{office['id']}")
        assert r.status_code == 403, r.text
        bound_manager = await api_client(app, scopes=["commands.manage"], systems=["homeserver"])
        r = await bound_manager.get(f"/api/v1/commands/office/{office['id']}")
        assert r.status_code == 403 and r.json()["type"].endswith("forbidden-system"), r.text
        reader = await api_client(app, scopes=["events.read"])
        assert (await reader.get(f"/api/v1/commands/homeserver/{ping['id']}")).status_code == 403
        anonymous = await api_client(app, scopes=["commands.manage"])
        anonymous.headers.pop("Authorization", None)
        assert (await anonymous.get(f"/api/v1/commands/homeserver/{ping['id']}")).status_code == 401


async def test_many_concurrent_pollers_never_share_a_command(commands_app, api_client, helpers):
    async with commands_app() as app:
        ids = await helpers.enqueue_many(app, 96)
        clients = [await api_client(app, scopes=["commands.manage"]) for _ in range(8)]
        seen: list[int] = []

        async def worker(c):
            empty = 0
            while empty < 2:
                items = await _poll(c, limit=3, lease_seconds=300)
                assert len(items) <= 3
                if not items:
                    empty += 1
                    continue
                for item in items:
                    seen.append(item["id"])
                    assert item["attempts"] == 1
                    r = await c.post(
                        f"/api/v1/commands/{item['id']}/complete",
                        json={"result": None, "lease_token": item["lease_token"]},
                    )
                    assert r.status_code == 200, r.text

        await asyncio.gather(*(worker(c) for c in clients))
        assert len(seen) == len(set(seen)) == 96
        assert sorted(seen) == sorted(ids)
        page = await clients[0].get("/api/v1/commands", params={"status": "completed", "limit": 500})
        assert len(page.json()["items"]) == 96


async def test_service_layer_pollers_under_contention(commands_app, helpers):
    async with commands_app() as app:
        await helpers.enqueue_many(app, 160)
        queue = helpers.queue(app)
        seen: list[int] = []

        async def worker():
            for _ in range(200):
                items = await queue.lease("homeserver", limit=2, lease_seconds=300)
                assert len(items) <= 2
                if not items:
                    return
                seen.extend(i["id"] for i in items)

        await asyncio.gather(*(worker() for _ in range(8)))
        assert len(seen) == len(set(seen)) == 160


async def test_poll_returns_oldest_due_first_and_respects_not_before(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        later = datetime.now().astimezone() + timedelta(hours=1)
        future = await _enqueue(c, {**PING, "not_before": later.isoformat()})
        a = await _enqueue(c)
        b = await _enqueue(c, {**PING, "params": {"n": "2"}})
        assert future["not_before"].endswith("Z")
        items = await _poll(c, limit=10)
        assert [x["id"] for x in items] == [a["id"], b["id"]]


async def test_expired_lease_returns_to_the_queue_and_counts_the_attempt(commands_app, api_client, helpers):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        cmd = await _enqueue(c)
        first = (await _poll(c, lease_seconds=1))[0]
        await helpers.shift(app, [cmd["id"]], lease_expires_at=timedelta(seconds=5))
        second = (await _poll(c, lease_seconds=60))[0]
        assert second["id"] == cmd["id"] and second["attempts"] == 2
        assert second["lease_token"] != first["lease_token"]
        # The first poller's late callbacks lose: the command went to another poller.
        for verb, body in (("complete", {"result": 1}), ("fail", {"error": "x"}), ("extend", {})):
            r = await c.post(f"/api/v1/commands/{cmd['id']}/{verb}", json={**body, "lease_token": first["lease_token"]})
            assert r.status_code == 409 and r.json()["type"].endswith("lease-lost"), (verb, r.text)
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/complete", json={"result": 2, "lease_token": second["lease_token"]}
        )
        assert r.status_code == 200 and r.json()["attempts"] == 2
        expired = await helpers.audit(admin, entity="command", action="lease_expired")
        assert [a["entity_id"] for a in expired] == [str(cmd["id"])]


async def test_expired_lease_on_the_last_attempt_is_dead_and_retry_revives_it(commands_app, api_client, helpers):
    async with commands_app(default_max_attempts=2) as app:
        c = await api_client(app, scopes=["commands.manage"])
        cmd = await _enqueue(c)
        for _ in range(2):
            assert [x["id"] for x in await _poll(c, lease_seconds=1)] == [cmd["id"]]
            await helpers.shift(app, [cmd["id"]], lease_expires_at=timedelta(seconds=5))
        # The recovery job (also run on every poll) marks it dead.
        await helpers.queue(app).recover_all()
        assert await _poll(c) == []
        dead = (await c.get("/api/v1/commands", params={"status": "dead"})).json()["items"]
        assert [x["id"] for x in dead] == [cmd["id"]] and dead[0]["attempts"] == 2
        assert "lease expired" in dead[0]["error"]
        r = await c.post(f"/api/v1/commands/{cmd['id']}/retry")
        assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
        again = await c.post(f"/api/v1/commands/{cmd['id']}/retry")
        assert again.status_code == 409
        assert [x["id"] for x in await _poll(c)] == [cmd["id"]]


async def test_fail_with_retry_backs_off_then_goes_dead(commands_app, api_client, helpers):
    async with commands_app(default_max_attempts=3, backoff_base_seconds=60) as app:
        c = await api_client(app, scopes=["commands.manage"])
        cmd = await _enqueue(c)
        before = datetime.now().astimezone()
        item = (await _poll(c))[0]
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/fail",
            json={"error": "busy", "retry": True, "lease_token": item["lease_token"]},
        )
        assert r.status_code == 200 and r.json()["status"] == "pending"
        not_before = datetime.fromisoformat(r.json()["not_before"].replace("Z", "+00:00"))
        # Backoff after the first attempt: between half and all of 60 s.
        assert before + timedelta(seconds=29) <= not_before <= before + timedelta(seconds=61)
        assert await _poll(c) == []  # not due yet
        await helpers.shift(app, [cmd["id"]], not_before=timedelta(seconds=1))
        item = (await _poll(c))[0]
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/fail",
            json={"error": "busy", "retry": True, "retry_after_seconds": 5, "lease_token": item["lease_token"]},
        )
        nb = datetime.fromisoformat(r.json()["not_before"].replace("Z", "+00:00"))
        assert timedelta(seconds=3) < nb - datetime.now(nb.tzinfo) <= timedelta(seconds=5)
        await helpers.shift(app, [cmd["id"]], not_before=timedelta(seconds=1))
        item = (await _poll(c))[0]
        assert item["attempts"] == 3
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/fail",
            json={"error": "still busy", "retry": True, "lease_token": item["lease_token"]},
        )
        assert r.status_code == 200 and r.json()["status"] == "dead"
        dead = (await c.get("/api/v1/commands", params={"status": "dead"})).json()["items"]
        assert [x["id"] for x in dead] == [cmd["id"]]


def test_backoff_grows_exponentially_with_jitter():
    from chronos_commands.queue import CommandQueue
    from chronos_commands.settings import CommandsSettings

    queue = CommandQueue(None, CommandsSettings(backoff_base_seconds=2, backoff_max_seconds=100))
    for attempts, full in ((1, 2), (2, 4), (3, 8), (5, 32), (9, 100), (60, 100)):
        samples = [queue.backoff(attempts) for _ in range(200)]
        assert all(full / 2 <= s <= full for s in samples), attempts
        assert len({round(s, 6) for s in samples}) > 1  # jittered


async def test_extend_moves_the_lease(commands_app, api_client):
    async with commands_app(max_lease_seconds=600) as app:
        c = await api_client(app, scopes=["commands.manage"])
        cmd = await _enqueue(c)
        item = (await _poll(c, lease_seconds=5))[0]
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/extend", json={"lease_seconds": 500, "lease_token": item["lease_token"]}
        )
        assert r.status_code == 200
        exp = datetime.fromisoformat(r.json()["lease_expires_at"].replace("Z", "+00:00"))
        assert exp - datetime.now(exp.tzinfo) > timedelta(seconds=400)
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/extend", json={"lease_seconds": 601, "lease_token": item["lease_token"]}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/lease_seconds"
        r = await c.get("/api/v1/commands/homeserver", params={"lease_seconds": 601})
        assert r.status_code == 422
        r = await c.post(f"/api/v1/commands/{cmd['id']}/extend", json={"lease_token": "not-mine"})
        assert r.status_code == 409
        await c.post(f"/api/v1/commands/{cmd['id']}/complete", json={"lease_token": item["lease_token"]})
        r = await c.post(f"/api/v1/commands/{cmd['id']}/extend", json={"lease_token": item["lease_token"]})
        assert r.status_code == 409


async def test_keys_bound_to_a_system_act_only_on_that_system(commands_app, api_client):
    async with commands_app() as app:
        manager = await api_client(app, scopes=["commands.manage"])
        home = await api_client(app, scopes=["events.read"], systems=["homeserver"])
        other = await api_client(app, scopes=["events.read"], systems=["office"])
        cmd = await _enqueue(manager)
        await _enqueue(manager, {"target_system": "office", "command": "PRINT", "params": {"doc": "a.pdf"}})

        assert (await other.get("/api/v1/commands/homeserver")).status_code == 403
        items = await _poll(home)
        assert [x["id"] for x in items] == [cmd["id"]]
        token = items[0]["lease_token"]
        # Another system's key may not acknowledge it.
        for verb, body in (("complete", {"result": 1}), ("fail", {"error": "x"}), ("extend", {})):
            r = await other.post(f"/api/v1/commands/{cmd['id']}/{verb}", json={**body, "lease_token": token})
            assert r.status_code == 403, (verb, r.text)
        # A key with neither the scope nor a binding is refused before anything is looked up.
        nobody = await api_client(app, scopes=["events.read"])
        r = await nobody.post(f"/api/v1/commands/{cmd['id']}/complete", json={"result": 1, "lease_token": token})
        assert r.status_code == 403
        # Management routes need the scope.
        assert (await home.get("/api/v1/commands")).status_code == 403
        assert (await home.post("/api/v1/commands", json=PING)).status_code == 403
        assert (await home.post(f"/api/v1/commands/{cmd['id']}/retry")).status_code == 403
        assert (await home.get("/api/v1/commands/office")).status_code == 403
        r = await home.post(f"/api/v1/commands/{cmd['id']}/complete", json={"result": "done", "lease_token": token})
        assert r.status_code == 200
        # Unauthenticated: 401.
        r = await home.post(
            f"/api/v1/commands/{cmd['id']}/complete", json={"lease_token": token}, headers={"Authorization": ""}
        )
        assert r.status_code == 401

        # The binding restricts whatever the scopes: commands.manage or admin do not widen it.
        office = await _enqueue(manager, {"target_system": "office", "command": "PRINT", "params": {"doc": "b"}})
        held = await _poll(manager, "office", limit=1)  # the first office command, leased by the manager
        for scopes in (["commands.manage"], ["admin"]):
            bound = await api_client(app, scopes=scopes, systems=["homeserver"])
            r = await bound.get("/api/v1/commands/office")
            assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json", r.text
            assert r.json()["type"].endswith("forbidden-system")
            for verb, body in (("complete", {"result": 1}), ("fail", {"error": "x"}), ("extend", {})):
                r = await bound.post(
                    f"/api/v1/commands/{held[0]['id']}/{verb}", json={**body, "lease_token": held[0]["lease_token"]}
                )
                assert r.status_code == 403 and r.json()["type"].endswith("forbidden-system"), (scopes, verb, r.text)
            for verb in ("cancel", "retry"):
                r = await bound.post(f"/api/v1/commands/{office['id']}/{verb}")
                assert r.status_code == 403, (scopes, verb, r.text)
            r = await bound.post("/api/v1/commands", json={"target_system": "office", "command": "PRINT"})
            assert r.status_code == 403 and r.json()["type"].endswith("forbidden-system")
            assert (await bound.get("/api/v1/commands", params={"system": "office"})).status_code == 403
            listed = (await bound.get("/api/v1/commands", params={"limit": 500})).json()["items"]
            assert listed and {x["target_system"] for x in listed} == {"homeserver"}
            # Its own system it may still manage.
            r = await bound.post("/api/v1/commands", json=PING)
            assert r.status_code == 201
            assert [x["id"] for x in await _poll(bound)] == [r.json()["id"]]
        states = {x["id"]: x["status"] for x in (await manager.get("/api/v1/commands")).json()["items"]}
        assert states[held[0]["id"]] == "processing" and states[office["id"]] == "pending"


async def test_a_stale_callback_never_wins_over_the_current_lease(commands_app, api_client, helpers):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        cmd = await _enqueue(c)
        first = (await _poll(c, lease_seconds=1))[0]
        await helpers.shift(app, [cmd["id"]], lease_expires_at=timedelta(seconds=5))
        second = (await _poll(c))[0]
        assert second["id"] == cmd["id"] and second["attempts"] == 2
        # The first worker reports late. Without a token the callback is invalid...
        for verb, body in (("complete", {"result": "stale"}), ("fail", {"error": "stale"}), ("extend", {})):
            r = await c.post(f"/api/v1/commands/{cmd['id']}/{verb}", json=body)
            assert r.status_code == 422, (verb, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert [e["pointer"] for e in r.json()["errors"]] == ["/lease_token"], r.json()
        r = await c.post(f"/api/v1/commands/{cmd['id']}/complete")  # no body at all
        assert r.status_code == 422
        # ... and with its own token it has lost the lease.
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/complete", json={"result": "stale", "lease_token": first["lease_token"]}
        )
        assert r.status_code == 409 and r.json()["type"].endswith("lease-lost")
        # The current holder's completion wins, and only its token replays it.
        body = {"result": "fresh", "lease_token": second["lease_token"]}
        r = await c.post(f"/api/v1/commands/{cmd['id']}/complete", json=body)
        assert r.status_code == 200 and r.json()["result"] == "fresh"
        again = await c.post(f"/api/v1/commands/{cmd['id']}/complete", json=body)
        assert again.status_code == 200 and again.json() == r.json()
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/complete", json={"result": "fresh", "lease_token": first["lease_token"]}
        )
        assert r.status_code == 409


async def test_non_finite_numbers_are_refused(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        json_ct = {"content-type": "application/json"}
        for number in (b"1e400", b"-1e400", b"Infinity", b"-Infinity", b"NaN"):
            raw = b'{"target_system": "homeserver", "command": "LIGHT", "params": {"note": ' + number + b"}}"
            r = await c.post("/api/v1/commands", content=raw, headers=json_ct)
            assert r.status_code == 422, (number, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["errors"][0]["pointer"] == "/params/note", r.json()
            raw = (
                b'{"target_system": "homeserver", "command": "LIGHT", "params": {"note": {"deep": [1, '
                + number
                + b"]}}}"
            )
            r = await c.post("/api/v1/commands", content=raw, headers=json_ct)
            assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/params/note/deep/1", r.text
        assert (await c.get("/api/v1/commands")).json()["items"] == []  # nothing stored, nothing turned into null

        cmd = await _enqueue(c)
        token = (await _poll(c))[0]["lease_token"]
        url = f"/api/v1/commands/{cmd['id']}/complete"
        for result in (b"1e400", b"Infinity", b'{"v": [-Infinity]}', b"NaN"):
            raw = b'{"result": ' + result + b', "lease_token": "' + token.encode() + b'"}'
            r = await c.post(url, content=raw, headers=json_ct)
            assert r.status_code == 422, (result, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["errors"][0]["pointer"].startswith("/result"), r.json()
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/fail",
            headers=json_ct,
            content=b'{"error": "x", "retry": true, "retry_after_seconds": Infinity, "lease_token": "t"}',
        )
        assert r.status_code == 422, r.text
        # Nothing was lost: the command is still leased and completes with a finite number.
        r = await c.post(url, json={"result": 1e300, "lease_token": token})
        assert r.status_code == 200 and r.json()["result"] == 1e300


async def test_callback_bodies_that_are_not_json(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        cmd = await _enqueue(c)
        token = (await _poll(c))[0]["lease_token"]
        url = f"/api/v1/commands/{cmd['id']}/complete"
        r = await c.post(url, content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
        r = await c.post(url, content=b"\xff\xfe\x00binary", headers={"content-type": "application/json"})
        assert r.status_code in (400, 422)
        r = await c.post(url, content=b"plain text", headers={"content-type": "text/plain"})
        assert r.status_code in (400, 415, 422), r.text
        r = await c.post(url, json=["a", "list"])
        assert r.status_code == 422
        r = await c.post(url, json={"result": 1, "unexpected": True, "lease_token": token})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/unexpected"
        r = await c.post(f"/api/v1/commands/{cmd['id']}/fail", json={"retry": True, "lease_token": token})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/error"
        r = await c.post(url, json={"result": {"x": "nul\u0000byte"}, "lease_token": token})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/result/x"
        r = await c.post(url, json={"result": "x" * 70_000, "lease_token": token})
        assert r.status_code == 422
        r = await c.post(f"/api/v1/commands/{cmd['id']}/fail", json={"error": "bad\u0001", "lease_token": token})
        assert r.status_code == 422
        # Nothing was lost: the command is still leased and can complete.
        r = await c.post(url, json={"result": "ok", "lease_token": token})
        assert r.status_code == 200 and r.json()["status"] == "completed"


async def test_concurrent_duplicate_callbacks_have_one_winner(commands_app, api_client, helpers):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        same, diff = await _enqueue(c), await _enqueue(c, {**PING, "params": {"n": "9"}})
        items = {x["id"]: x for x in await _poll(c, limit=2)}

        body = {"result": {"v": 1}, "lease_token": items[same["id"]]["lease_token"]}
        rs = await asyncio.gather(*(c.post(f"/api/v1/commands/{same['id']}/complete", json=body) for _ in range(10)))
        assert {r.status_code for r in rs} == {200}
        assert len({r.text for r in rs}) == 1

        tok = items[diff["id"]]["lease_token"]
        rs = await asyncio.gather(
            *(
                c.post(f"/api/v1/commands/{diff['id']}/complete", json={"result": {"v": i}, "lease_token": tok})
                for i in range(10)
            )
        )
        assert sorted(r.status_code for r in rs) == [200] + [409] * 9
        completes = await helpers.audit(admin, entity="command", action="complete")
        assert sorted(a["entity_id"] for a in completes) == sorted([str(same["id"]), str(diff["id"])])


async def test_cancel_stops_a_command(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        a, b = await _enqueue(c), await _enqueue(c, {**PING, "params": {"n": "5"}})
        r = await c.post(f"/api/v1/commands/{a['id']}/cancel", json={"reason": "not needed"})
        assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["error"] == "not needed"
        assert (await c.post(f"/api/v1/commands/{a['id']}/cancel")).status_code == 200
        item = (await _poll(c))[0]
        assert item["id"] == b["id"]
        # Cancelling a leased command makes the worker's callback a conflict.
        await c.post(f"/api/v1/commands/{b['id']}/cancel")
        r = await c.post(f"/api/v1/commands/{b['id']}/complete", json={"lease_token": item["lease_token"]})
        assert r.status_code == 409
        c2 = await _enqueue(c, {**PING, "params": {"n": "6"}})
        token = (await _poll(c))[0]["lease_token"]
        r = await c.post(f"/api/v1/commands/{c2['id']}/complete", json={"lease_token": token})
        assert r.status_code == 200
        assert (await c.post(f"/api/v1/commands/{c2['id']}/cancel")).status_code == 409


async def test_a_disabled_whitelist_entry_holds_its_commands(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        cmd = await _enqueue(c)
        entries = (await admin.get("/api/v1/whitelists", params={"system": "homeserver"})).json()["items"]
        ping = next(e for e in entries if e["action"] == "PING")
        await admin.patch(f"/api/v1/whitelists/{ping['id']}", json={"enabled": False})
        assert await _poll(c) == []
        r = await c.post("/api/v1/commands", json=PING)
        assert r.status_code == 422 and "disabled" in r.json()["detail"]
        await admin.patch(f"/api/v1/whitelists/{ping['id']}", json={"enabled": True})
        assert [x["id"] for x in await _poll(c)] == [cmd["id"]]


async def test_listing_filters_and_cursor(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        ids = [(await _enqueue(c, {**PING, "params": {"n": str(i)}}))["id"] for i in range(7)]
        office = await _enqueue(c, {"target_system": "office", "command": "PRINT"})
        await _poll(c, limit=2)
        seen, cursor = [], None
        while True:
            params = {"system": "homeserver", "limit": 3} | ({"cursor": cursor} if cursor else {})
            page = (await c.get("/api/v1/commands", params=params)).json()
            seen += [x["id"] for x in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == sorted(ids, reverse=True)
        processing = (await c.get("/api/v1/commands", params={"status": "processing"})).json()["items"]
        assert sorted(x["id"] for x in processing) == ids[:2]
        both = (await c.get("/api/v1/commands", params=[("status", "processing"), ("status", "pending")])).json()
        assert len(both["items"]) == 8
        r = await c.get("/api/v1/commands", params={"command": "print"})
        assert [x["id"] for x in r.json()["items"]] == [office["id"]]
        for bad in ("garbage", "eyJrIjoid29yZmxvd3MiLCJ2IjpbMV19", "A" * 3000):
            r = await c.get("/api/v1/commands", params={"cursor": bad})
            assert r.status_code in (400, 422), bad
        assert (await c.get("/api/v1/commands", params={"cursor": "garbage"})).status_code == 400
        assert (await c.get("/api/v1/commands", params={"status": "bogus"})).status_code == 422
        assert (await c.get("/api/v1/commands", params={"limit": 0})).status_code == 422
        assert (await c.get("/api/v1/commands/homeserver", params={"limit": 101})).status_code == 422
