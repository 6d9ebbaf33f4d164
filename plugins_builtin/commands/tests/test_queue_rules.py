"""Queue rules that must hold under pressure: ordering, once-only workflows, racing callbacks
across transactions, recovery-driven workflows, calendar edits and malformed callback bodies."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text

PING = {"target_system": "homeserver", "command": "PING", "params": {"n": "1"}}
MALFORMED = "urn:chronos:problem:malformed-body"


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _enqueue(c, **fields: Any) -> dict[str, Any]:
    r = await c.post("/api/v1/commands", json={**PING, **fields})
    assert r.status_code == 201, r.text
    return r.json()


async def _poll(c, system: str = "homeserver", **params: Any) -> list[dict[str, Any]]:
    r = await c.get(f"/api/v1/commands/{system}", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def _get(c, command_id: int) -> dict[str, Any]:
    """One command as the listing shows it (the API lists; it has no single-command GET)."""
    items = (await c.get("/api/v1/commands", params={"limit": 500})).json()["items"]
    return next(x for x in items if x["id"] == command_id)


async def _rule(admin, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "on failure",
        "trigger_command": "PING",
        "on": "failed",
        "action_command": "PRINT",
        "action_target": "office",
        "params_template_json": {"doc": "{{ id }}: {{ error }}"},
    } | fields
    r = await admin.post("/api/v1/workflows", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def _prints(c) -> list[dict[str, Any]]:
    r = await c.get("/api/v1/commands", params={"system": "office", "command": "PRINT", "limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def _firings(app, trigger_id: int) -> list[tuple[int, str, int | None]]:
    from chronos_commands.models import WorkflowFiring

    F = WorkflowFiring.__table__
    async with app.state.chronos.db.read() as s:
        rows = (
            await s.execute(
                select(F.c.workflow_id, F.c.outcome, F.c.follow_command_id)
                .where(F.c.trigger_command_id == trigger_id)
                .order_by(F.c.id)
            )
        ).all()
    return [tuple(r) for r in rows]


# -- a. oldest due first ------------------------------------------------------------------------------


async def test_a_a_command_due_earlier_is_handed_out_before_an_older_id(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        now = datetime.now(UTC).replace(microsecond=0)
        a = await _enqueue(c, params={"n": "1"})  # not_before: now
        b = await _enqueue(c, params={"n": "2"}, not_before=_ts(now - timedelta(hours=1)))
        first = await _poll(c, limit=1, lease_seconds=300)
        assert [x["id"] for x in first] == [b["id"]], (
            f"the command due an hour ago (id {b['id']}) must be handed out before the newer one (id {a['id']}); "
            f"got {[x['id'] for x in first]}"
        )
        assert [x["id"] for x in await _poll(c, limit=1, lease_seconds=300)] == [a["id"]]


async def test_a_one_at_a_time_polls_follow_not_before_then_id(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        now = datetime.now(UTC).replace(microsecond=0)
        tie = _ts(now - timedelta(minutes=30))
        # Enqueued deliberately out of order; two pairs share a not_before so the id breaks the tie.
        offsets = [
            ("n", None),
            ("t1", tie),
            ("h3", _ts(now - timedelta(hours=3))),
            ("t2", tie),
            ("m5", _ts(now - timedelta(minutes=5))),
            ("h1", _ts(now - timedelta(hours=1))),
            ("t3", tie),
            ("h3b", _ts(now - timedelta(hours=3))),
        ]
        made: dict[str, int] = {}
        for i, (label, nb) in enumerate(offsets):
            fields: dict[str, Any] = {"params": {"n": str(i)}}
            if nb is not None:
                fields["not_before"] = nb
            made[label] = (await _enqueue(c, **fields))["id"]
        # A future command is never handed out, whatever its id.
        await _enqueue(c, params={"n": "99"}, not_before=_ts(now + timedelta(hours=1)))
        # Oldest not_before first; equal not_before in id (= enqueue) order.
        expected = [made[k] for k in ("h3", "h3b", "h1", "t1", "t2", "t3", "m5", "n")]

        order = []
        for _ in range(len(made) + 2):
            items = await _poll(c, limit=1, lease_seconds=300)
            assert len(items) <= 1
            if not items:
                break
            order.append(items[0]["id"])
        assert order == expected, f"poll order must follow (not_before, id): expected {expected}, got {order}"


async def test_a_a_multi_item_poll_takes_the_oldest_and_returns_them_in_order(commands_app, api_client):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        now = datetime.now(UTC).replace(microsecond=0)
        minutes_ago = (1, 50, 10, 40, 20, 30)
        made = [
            (await _enqueue(c, params={"n": str(i)}, not_before=_ts(now - timedelta(minutes=m))))["id"]
            for i, m in enumerate(minutes_ago)
        ]
        expected = [cid for _, cid in sorted(zip(minutes_ago, made, strict=True), reverse=True)]
        got = [x["id"] for x in await _poll(c, limit=3, lease_seconds=300)]
        assert got == expected[:3], f"a limit-3 poll must take the three oldest, in order: {expected[:3]} vs {got}"
        got = [x["id"] for x in await _poll(c, limit=3, lease_seconds=300)]
        assert got == expected[3:]


# -- b. a workflow fires once per (trigger, rule) -----------------------------------------------------


async def test_b_a_failure_rule_fires_once_per_trigger_across_retries_and_revivals(commands_app, api_client, helpers):
    async with commands_app(default_max_attempts=2) as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        rule = await _rule(admin)
        cmd = await _enqueue(c)

        # Attempt 1: a retryable failure is not final, so nothing fires.
        item = (await _poll(c))[0]
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/fail",
            json={"error": "e1", "retry": True, "lease_token": item["lease_token"]},
        )
        assert r.status_code == 200 and r.json()["status"] == "pending", r.text
        assert await _prints(c) == []

        # Attempt 2: the last one, so the command is dead and the rule fires.
        await helpers.shift(app, [cmd["id"]], not_before=timedelta(seconds=1))
        item = (await _poll(c))[0]
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/fail",
            json={"error": "e2", "retry": True, "lease_token": item["lease_token"]},
        )
        assert r.status_code == 200 and r.json()["status"] == "dead", r.text
        prints = await _prints(c)
        assert len(prints) == 1 and prints[0]["params"] == {"doc": f"{cmd['id']}: e2"}
        assert prints[0]["parent_command_id"] == cmd["id"] and prints[0]["workflow_id"] == rule["id"]

        # The same failure report again changes nothing.
        again = await c.post(
            f"/api/v1/commands/{cmd['id']}/fail",
            json={"error": "e2", "retry": True, "lease_token": item["lease_token"]},
        )
        assert again.status_code == 200 and again.json()["status"] == "dead"

        # Revived and failed for good, twice over: still one follow-up from this rule.
        for error in ("e3", "e4"):
            r = await c.post(f"/api/v1/commands/{cmd['id']}/retry")
            assert r.status_code == 200 and r.json()["status"] == "pending", r.text
            item = (await _poll(c))[0]
            assert item["id"] == cmd["id"]
            r = await c.post(
                f"/api/v1/commands/{cmd['id']}/fail", json={"error": error, "lease_token": item["lease_token"]}
            )
            assert r.status_code == 200 and r.json()["status"] == "failed", r.text

        prints = await _prints(c)
        assert [(p["workflow_id"], p["parent_command_id"]) for p in prints] == [(rule["id"], cmd["id"])], (
            f"rule {rule['id']} fired more than once for command {cmd['id']}: {prints}"
        )
        assert await _firings(app, cmd["id"]) == [(rule["id"], "enqueued", prints[0]["id"])]
        creates = [
            a
            for a in await helpers.audit(admin, entity="command", action="create")
            if a["change"].get("origin") == "workflow"
        ]
        assert len(creates) == 1


async def test_b_once_is_per_rule_a_rule_added_later_still_fires_once(commands_app, api_client, helpers):
    async with commands_app() as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        first = await _rule(admin, name="first")
        cmd = await _enqueue(c, max_attempts=1)
        item = (await _poll(c))[0]
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/fail", json={"error": "x", "retry": True, "lease_token": item["lease_token"]}
        )
        assert r.json()["status"] == "dead"
        second = await _rule(admin, name="second", params_template_json={"doc": "second {{ id }}"})

        for error in ("y", "z"):
            assert (await c.post(f"/api/v1/commands/{cmd['id']}/retry")).status_code == 200
            item = (await _poll(c))[0]
            r = await c.post(
                f"/api/v1/commands/{cmd['id']}/fail", json={"error": error, "lease_token": item["lease_token"]}
            )
            assert r.status_code == 200 and r.json()["status"] == "failed"

        by_rule: dict[int, int] = {}
        for p in await _prints(c):
            assert p["parent_command_id"] == cmd["id"]
            by_rule[p["workflow_id"]] = by_rule.get(p["workflow_id"], 0) + 1
        assert by_rule == {first["id"]: 1, second["id"]: 1}, f"each rule must fire exactly once: {by_rule}"
        second_doc = [p["params"]["doc"] for p in await _prints(c) if p["workflow_id"] == second["id"]]
        assert second_doc == [f"second {cmd['id']}"]


# -- c. racing callbacks in separate transactions -----------------------------------------------------


@asynccontextmanager
async def _two_apps(commands_app, api_client):
    """Two app instances on one database (two processes, as in production), each with a client."""
    async with commands_app() as app_a, commands_app() as app_b:
        ca = await api_client(app_a, scopes=["commands.manage"])
        cb = await api_client(app_b, scopes=["commands.manage"])
        yield app_a, app_b, ca, cb


@asynccontextmanager
async def _row_held(app, command_id: int):
    """Hold the command's row lock (SQLite: the write lock) in a third transaction.

    Callbacks started inside the block queue behind it, so they are all in flight at
    once when it ends. Yields a coroutine function that waits until ``n`` other
    transactions are blocked on the holder (PostgreSQL) or simply lets them start (SQLite).
    """
    from chronos_commands.models import ExternalCommand

    T = ExternalCommand.__table__
    db = app.state.chronos.db
    async with db.write() as s:
        await s.execute(select(T.c.id).where(T.c.id == command_id).with_for_update())
        holder_pid = None
        if not db.is_sqlite:
            holder_pid = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()

        async def blocked(n: int, timeout: float = 10.0) -> int:
            if holder_pid is None:
                await asyncio.sleep(0.3)
                return n
            waiting = 0
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                # The first waiter waits on the holder; later ones queue on the first waiter's
                # tuple lock, so count every backend whose chain of blockers reaches the holder.
                async with db.read() as r:
                    edges = (
                        await r.execute(
                            text(
                                "SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity"
                                " WHERE cardinality(pg_blocking_pids(pid)) > 0"
                            )
                        )
                    ).all()
                reached = {holder_pid}
                grew = True
                while grew:
                    grew = False
                    for pid, blockers in edges:
                        if pid not in reached and reached.intersection(blockers):
                            reached.add(pid)
                            grew = True
                waiting = len(reached) - 1
                if waiting >= n:
                    break
                await asyncio.sleep(0.02)
            return waiting

        yield blocked


async def _audit_actions(admin, command_id: int) -> list[str]:
    r = await admin.get("/api/v1/audit", params={"entity": "command", "limit": 500})
    assert r.status_code == 200, r.text
    return [a["action"] for a in reversed(r.json()["items"]) if a["entity_id"] == str(command_id)]


async def test_c_the_same_completion_from_two_processes_has_one_winner(commands_app, api_client, database):
    async with _two_apps(commands_app, api_client) as (app_a, app_b, ca, cb):
        admin = await api_client(app_a, scopes=["admin"])
        cmd = await _enqueue(ca)
        token = (await _poll(ca))[0]["lease_token"]
        body = {"result": {"v": 1}, "lease_token": token}
        url = f"/api/v1/commands/{cmd['id']}/complete"

        async with _row_held(app_a, cmd["id"]) as blocked:
            tasks = [asyncio.create_task(ca.post(url, json=body)), asyncio.create_task(cb.post(url, json=body))]
            waiting = await blocked(2)
            assert not any(t.done() for t in tasks), "a callback finished while the row was locked"
        ra, rb = await asyncio.wait_for(asyncio.gather(*tasks), 20)
        if database.backend == "postgresql":
            assert waiting == 2, f"both completions should have waited on the row lock; {waiting} did"

        codes = sorted((ra.status_code, rb.status_code))
        assert codes in ([200, 200], [200, 409]), (ra.text, rb.text)
        if codes == [200, 200]:
            assert ra.json() == rb.json(), "an idempotent repeat must answer exactly what the winner got"
        winner = ra if ra.status_code == 200 else rb
        assert winner.json()["status"] == "completed" and winner.json()["result"] == {"v": 1}
        actions = await _audit_actions(admin, cmd["id"])
        assert actions == ["create", "lease", "complete"], (
            f"two transactions both completed command {cmd['id']} (audit: {actions})"
        )


async def test_c_different_completions_from_two_processes_one_wins_the_other_conflicts(
    commands_app, api_client, database
):
    async with _two_apps(commands_app, api_client) as (app_a, app_b, ca, cb):
        admin = await api_client(app_a, scopes=["admin"])
        cmd = await _enqueue(ca)
        token = (await _poll(ca))[0]["lease_token"]
        url = f"/api/v1/commands/{cmd['id']}/complete"

        async with _row_held(app_b, cmd["id"]) as blocked:
            tasks = [
                asyncio.create_task(ca.post(url, json={"result": {"by": "a"}, "lease_token": token})),
                asyncio.create_task(cb.post(url, json={"result": {"by": "b"}, "lease_token": token})),
            ]
            waiting = await blocked(2)
        ra, rb = await asyncio.wait_for(asyncio.gather(*tasks), 20)
        if database.backend == "postgresql":
            assert waiting == 2, f"both completions should have waited on the row lock; {waiting} did"

        assert sorted((ra.status_code, rb.status_code)) == [200, 409], (
            f"exactly one completion may win: {ra.status_code} {ra.text} / {rb.status_code} {rb.text}"
        )
        winner, loser = (ra, rb) if ra.status_code == 200 else (rb, ra)
        assert loser.headers["content-type"] == "application/problem+json"
        assert loser.json()["status_now"] == "completed"
        stored = await _get(ca, cmd["id"])
        assert stored["status"] == "completed" and stored["result"] == winner.json()["result"], (
            f"the stored result {stored['result']} is not the winner's {winner.json()['result']}"
        )
        assert await _audit_actions(admin, cmd["id"]) == ["create", "lease", "complete"]


async def test_c_complete_racing_fail_from_two_processes_has_one_consistent_winner(commands_app, api_client, database):
    async with _two_apps(commands_app, api_client) as (app_a, app_b, ca, cb):
        admin = await api_client(app_a, scopes=["admin"])
        outcomes = []
        for round_ in range(3):
            cmd = await _enqueue(ca, params={"n": str(round_)})
            token = next(x for x in await _poll(ca, limit=5) if x["id"] == cmd["id"])["lease_token"]
            base = f"/api/v1/commands/{cmd['id']}"
            async with _row_held(app_a, cmd["id"]) as blocked:
                # Alternate which process completes, so either may be first in line.
                completer, failer = (ca, cb) if round_ % 2 == 0 else (cb, ca)
                tasks = [
                    asyncio.create_task(
                        completer.post(f"{base}/complete", json={"result": "ok", "lease_token": token})
                    ),
                    asyncio.create_task(failer.post(f"{base}/fail", json={"error": "boom", "lease_token": token})),
                ]
                waiting = await blocked(2)
            rc, rf = await asyncio.wait_for(asyncio.gather(*tasks), 20)
            if database.backend == "postgresql":
                assert waiting == 2, f"complete and fail should both have waited on the row lock; {waiting} did"

            assert sorted((rc.status_code, rf.status_code)) == [200, 409], (
                f"exactly one of complete/fail may win: complete {rc.status_code} {rc.text} / "
                f"fail {rf.status_code} {rf.text}"
            )
            stored = await _get(ca, cmd["id"])
            actions = await _audit_actions(admin, cmd["id"])
            if rc.status_code == 200:
                assert rf.json()["status_now"] == "completed"
                assert stored["status"] == "completed" and stored["result"] == "ok" and stored["error"] is None
                assert actions == ["create", "lease", "complete"], actions
                outcomes.append("complete")
            else:
                assert rc.json()["status_now"] == "failed"
                assert stored["status"] == "failed" and stored["error"] == "boom" and stored["result"] is None
                assert actions == ["create", "lease", "fail"], actions
                outcomes.append("fail")
        assert len(outcomes) == 3


# -- d. recovery fires failure rules; calendar edits cancel scheduled commands ---------------------------


async def test_d_a_command_that_dies_by_lease_expiry_fires_its_failure_rule_once(commands_app, api_client, helpers):
    async with commands_app() as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        rule = await _rule(admin, params_template_json={"doc": "{{ id }} {{ status }}: {{ error }}"})
        by_job = await _enqueue(c, params={"n": "1"}, max_attempts=1)
        by_poll = await _enqueue(c, params={"n": "2"}, max_attempts=1)
        leased = await _poll(c, limit=5, lease_seconds=1)
        assert sorted(x["id"] for x in leased) == sorted([by_job["id"], by_poll["id"]])

        # The recovery job marks the first one dead.
        await helpers.shift(app, [by_job["id"]], lease_expires_at=timedelta(seconds=5))
        assert await helpers.queue(app).recover_all() == 1
        dead = await _get(c, by_job["id"])
        assert dead["status"] == "dead" and "lease expired" in dead["error"]
        prints = await _prints(c)
        assert [(p["parent_command_id"], p["workflow_id"]) for p in prints] == [(by_job["id"], rule["id"])], (
            f"a command marked dead by the stalled-lease recovery must fire its 'failed' rule: {prints}"
        )
        assert prints[0]["params"] == {"doc": f"{by_job['id']} dead: lease expired on the last attempt"}
        assert prints[0]["origin"] == "workflow" and prints[0]["status"] == "pending"

        # An idle poll recovers the second one on the spot.
        await helpers.shift(app, [by_poll["id"]], lease_expires_at=timedelta(seconds=5))
        assert await _poll(c, limit=5) == []
        assert (await _get(c, by_poll["id"]))["status"] == "dead"
        prints = await _prints(c)
        assert sorted(p["parent_command_id"] for p in prints) == sorted([by_job["id"], by_poll["id"]]), (
            f"the recovery run by a poll must fire the 'failed' rule too: {prints}"
        )

        # Recovery again (job or poll) fires nothing more.
        assert await helpers.queue(app).recover_all() == 0
        await _poll(c, limit=5)
        assert len(await _prints(c)) == 2
        for cid in (by_job["id"], by_poll["id"]):
            assert [(w, o) for w, o, _ in await _firings(app, cid)] == [(rule["id"], "enqueued")]
        dead_audit = await helpers.audit(admin, entity="command", action="dead")
        assert sorted(a["entity_id"] for a in dead_audit) == sorted([str(by_job["id"]), str(by_poll["id"])])


async def test_d_an_expiry_that_is_not_the_last_attempt_fires_nothing(commands_app, api_client, helpers):
    async with commands_app() as app:
        admin = await api_client(app, scopes=["admin"])
        c = await api_client(app, scopes=["commands.manage"])
        await _rule(admin)
        cmd = await _enqueue(c, max_attempts=2)
        await _poll(c, lease_seconds=1)
        await helpers.shift(app, [cmd["id"]], lease_expires_at=timedelta(seconds=5))
        assert await helpers.queue(app).recover_all() == 1
        assert (await _get(c, cmd["id"]))["status"] == "pending"
        assert await _prints(c) == []


async def sync(app) -> None:
    await app.state.runtime.pipeline.run("fake", "cal", full=True)


async def test_d_editing_a_scheduled_action_into_text_or_a_note_cancels_its_command(
    calendar_app, fake_source, api_client, helpers
):
    src = fake_source()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    src.put("plain", "ACTION: WATER garden minutes=10", start=tomorrow)
    src.put("note", "ACTION: WATER garden minutes=15", start=tomorrow + timedelta(hours=1))
    src.put("keep", "ACTION: WATER garden minutes=20", start=tomorrow + timedelta(hours=2))
    async with calendar_app(src) as app:
        c = await api_client(app, scopes=["admin"])
        await sync(app)
        cmds = {x["source"]["uid"]: x for x in (await c.get("/api/v1/commands", params={"limit": 500})).json()["items"]}
        assert sorted(cmds) == ["keep", "note", "plain"]
        assert all(x["status"] == "pending" for x in cmds.values())

        src.put("plain", "Rasen gießen nicht vergessen", start=tomorrow)
        src.put("note", "NOTIZ: Gießen fällt aus", start=tomorrow + timedelta(hours=1))
        await sync(app)

        now = {x["id"]: x for x in (await c.get("/api/v1/commands", params={"limit": 500})).json()["items"]}
        assert len(now) == 3, "an edit away from ACTION must not create a command"
        for uid in ("plain", "note"):
            got = now[cmds[uid]["id"]]
            assert got["status"] == "cancelled", (
                f"the entry {uid!r} no longer holds an ACTION, yet its command is {got['status']!r}"
            )
            assert got["error"] == "the calendar entry no longer holds this ACTION"
        assert now[cmds["keep"]["id"]]["status"] == "pending"
        cancels = await helpers.audit(c, entity="command", action="cancel")
        assert sorted(a["entity_id"] for a in cancels) == sorted([str(cmds["plain"]["id"]), str(cmds["note"]["id"])])
        assert all(a["actor"] == "source:fake/cal" for a in cancels)

        # The plain entry stays an ordinary event; the note is taken as a note and leaves the calendar.
        window = {"calendar_id": "cal", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "limit": 500}
        events = {e["uid"]: e for e in (await c.get("/api/v1/events", params=window)).json()["items"]}
        assert sorted(events) == ["keep", "plain"]
        assert events["plain"]["title"] == "Rasen gießen nicht vergessen"
        notes = (await c.get("/api/v1/notes")).json()["items"]
        assert [n["content"] for n in notes] == ["Gießen fällt aus"]

        # A cancelled command never reaches a worker, even once its time has come.
        await helpers.shift(app, [cmds["plain"]["id"], cmds["note"]["id"]], not_before=timedelta(seconds=1))
        assert await _poll(c, "garden", limit=10) == []
        await sync(app)
        assert len((await c.get("/api/v1/commands", params={"limit": 500})).json()["items"]) == 3


# -- e. callback bodies that are not JSON ----------------------------------------------------------------


async def test_e_a_non_json_callback_body_is_a_400_malformed_body_and_changes_nothing(
    commands_app, api_client, helpers
):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        cmd = await _enqueue(c)
        leased = (await _poll(c, lease_seconds=300))[0]
        before = await _get(c, cmd["id"])
        audit_before = await helpers.audit(admin, entity="command")

        for verb in ("complete", "fail", "extend"):
            for raw in (b"not json", b"{not json", b'{"result": 1', b"{'result': 1}", b"result=1"):
                r = await c.post(
                    f"/api/v1/commands/{cmd['id']}/{verb}", content=raw, headers={"content-type": "application/json"}
                )
                assert r.status_code == 400, (verb, raw, r.status_code, r.text)
                assert r.headers["content-type"] == "application/problem+json", (verb, raw)
                problem = r.json()
                assert problem["type"] == MALFORMED, (verb, raw, problem)
                assert problem["status"] == 400 and problem["title"] == "Bad Request"
                assert problem["instance"] == f"/api/v1/commands/{cmd['id']}/{verb}"

        after = await _get(c, cmd["id"])
        assert after == before, f"a malformed callback changed the command: {before} -> {after}"
        assert await helpers.audit(admin, entity="command") == audit_before
        # The lease is intact: the real callback still wins.
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/complete", json={"result": "ok", "lease_token": leased["lease_token"]}
        )
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text


async def test_d_the_entry_of_a_cancelled_command_no_longer_shows_it_as_scheduled(
    calendar_app, fake_source, api_client
):
    src = fake_source()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    src.put("plain", "ACTION: WATER garden minutes=10", start=tomorrow)
    async with calendar_app(src) as app:
        c = await api_client(app, scopes=["admin"])
        window = {"calendar_id": "cal", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "limit": 500}
        await sync(app)
        cmd = (await c.get("/api/v1/commands")).json()["items"][0]
        event = (await c.get("/api/v1/events", params=window)).json()["items"][0]
        assert event["metadata"]["command"] == {"id": cmd["id"], "status": "scheduled", "not_before": cmd["not_before"]}

        src.put("plain", "Rasen gießen nicht vergessen", start=tomorrow)
        await sync(app)
        assert (await c.get("/api/v1/commands")).json()["items"][0]["status"] == "cancelled"
        event = (await c.get("/api/v1/events", params=window)).json()["items"][0]
        shown = event["metadata"].get("command")
        assert not (shown and shown.get("id") == cmd["id"] and shown.get("status") == "scheduled"), (
            f"BUG: command {cmd['id']} was cancelled because its entry no longer holds an ACTION, but the "
            f"entry's metadata still announces it as scheduled: {shown}"
        )


async def test_e_a_callback_body_that_is_not_even_utf8_is_the_same_malformed_body_problem(
    commands_app, api_client, helpers
):
    async with commands_app() as app:
        c = await api_client(app, scopes=["commands.manage"])
        admin = await api_client(app, scopes=["admin"])
        cmd = await _enqueue(c)
        leased = (await _poll(c, lease_seconds=300))[0]
        before = await _get(c, cmd["id"])
        audit_before = await helpers.audit(admin, entity="command")
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/complete",
            content=b"\xff\xfe\x00binary",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", r.text
        assert await _get(c, cmd["id"]) == before
        assert await helpers.audit(admin, entity="command") == audit_before
        assert r.json()["type"] == MALFORMED, (
            f"BUG: a body that is not UTF-8 (so not JSON) is answered with problem type {r.json()['type']!r} "
            f"instead of {MALFORMED!r}, the type every other non-JSON body gets: {r.json()}"
        )
        r = await c.post(
            f"/api/v1/commands/{cmd['id']}/complete", json={"result": "ok", "lease_token": leased["lease_token"]}
        )
        assert r.status_code == 200
