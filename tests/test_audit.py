"""The audit log: same transaction as the change, hash chain, tamper detection, filtered listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request
from sqlalchemy import delete, func, select, text

from chronos.audit import verify_chain
from chronos.db.base import utcnow
from chronos.db.models import AuditEntry, JobRun
from chronos.plugin import Principal, Problem, Router, Scope, origin_of, record_audit, require_scope
from kernel_support import db_config, invoke_cli_async, is_problem, make_plugin, write_config

AUDIT = "/api/v1/audit"


def ledger_plugin():
    """Two mutations: one succeeds, one fails after writing its change and audit row."""
    router = APIRouter(prefix="/ledger")

    async def write(request: Request, principal: Principal, fail: bool) -> dict:
        ctx = request.app.state.chronos
        async with ctx.db.write() as s:
            s.add(JobRun(job="ledger", trigger="manual", status="ok", started_at=utcnow()))
            await record_audit(
                s,
                entity="ledger",
                entity_id="1",
                action="post",
                change={"fail": fail},
                principal=principal,
                origin=origin_of(request),
            )
            if fail:
                raise Problem(409, "The ledger is closed", type="conflict")
        return {"ok": True}

    @router.post("/ok")
    async def ok(request: Request, principal: Principal = Depends(require_scope("ledger.write"))) -> dict:
        return await write(request, principal, False)

    @router.post("/fail")
    async def fail(request: Request, principal: Principal = Depends(require_scope("ledger.write"))) -> dict:
        return await write(request, principal, True)

    return make_plugin(
        register_scopes=lambda: [Scope("ledger.write")], register_routers=lambda: [Router("ledger", router)]
    )


async def audit_rows(app) -> list[AuditEntry]:
    async with app.state.chronos.db.read() as s:
        return list((await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())


async def test_failed_mutation_leaves_no_audit_row(chronos_app, api_client):
    async with chronos_app(plugins=[("ledger", ledger_plugin())]) as app:
        c = await api_client(app, scopes=["ledger.write"])
        assert (await c.post("/api/v1/ledger/ok", headers={"X-Request-ID": "req-ok-1"})).status_code == 200
        is_problem(await c.post("/api/v1/ledger/fail"), 409)
        rows = await audit_rows(app)
        assert [(r.entity, r.change) for r in rows] == [("ledger", {"fail": False})]
        async with app.state.chronos.db.read() as s:
            assert (
                await s.execute(select(func.count()).select_from(JobRun).where(JobRun.job == "ledger"))
            ).scalar() == 1
        (row,) = rows
        assert row.scope == "ledger.write" and row.actor.startswith("k_")
        assert row.ip == "127.0.0.1" and row.request_id == "req-ok-1"
        async with app.state.chronos.db.read() as s:
            assert await verify_chain(s) == (1, None, None)


async def test_audit_log_has_no_update_or_delete_route(chronos_app, api_client):
    async with chronos_app() as app:
        admin = await api_client(app, scopes=["admin"])
        for method in ("PUT", "PATCH", "DELETE"):
            is_problem(await admin.request(method, AUDIT), 405)
            assert (await admin.request(method, f"{AUDIT}/1")).status_code in (404, 405)


async def test_chain_verifies_and_detects_tampering(database, chronos_app, api_client, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", db_config(database, plugins={"enabled": []}))
    async with chronos_app() as app:
        admin = await api_client(app, scopes=["admin"])
        for i in range(4):
            assert (
                await admin.post(
                    "/api/v1/keys", json={"name": f"k{i}", "scopes": ["events.read"], "expires_in_seconds": 3600}
                )
            ).status_code == 201
        rows = await audit_rows(app)
        assert len(rows) == 4
        assert rows[0].prev_hash == "0" * 64 and all(
            b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False)
        )

        res = await invoke_cli_async("audit", "verify", config=cfg)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "audit verify: ok (4 rows)"

        # Change a row behind the application's back.
        async with app.state.chronos.db.write() as s:
            await s.execute(text("UPDATE audit_log SET actor = 'someone-else' WHERE id = :id"), {"id": rows[2].id})
        res = await invoke_cli_async("audit", "verify", config=cfg)
        assert res.returncode == 1
        assert f"audit chain broken at row {rows[2].id}: content does not match its hash" in res.stderr

        # Removing a row breaks the link of the one after it.
        async with app.state.chronos.db.write() as s:
            await s.execute(
                text("UPDATE audit_log SET actor = :a WHERE id = :id"), {"a": rows[2].actor, "id": rows[2].id}
            )
        async with app.state.chronos.db.read() as s:
            assert await verify_chain(s) == (4, None, None)
        async with app.state.chronos.db.write() as s:
            await s.execute(delete(AuditEntry).where(AuditEntry.id == rows[1].id))
        async with app.state.chronos.db.read() as s:
            checked, broken, reason = await verify_chain(s)
        assert (checked, broken) == (1, rows[2].id) and "removed or reordered" in reason


async def test_audit_listing_filters_and_cursor(chronos_app, api_client):
    async with chronos_app() as app:
        admin = await api_client(app, scopes=["admin"])
        ids = []
        for i in range(5):
            r = await admin.post("/api/v1/keys", json={"name": f"k{i}", "scopes": ["events.read"]})
            ids.append(r.json()["id"])
        for key_id in ids[:2]:
            assert (await admin.delete(f"/api/v1/keys/{key_id}")).status_code == 200

        everything = (await admin.get(AUDIT, params={"limit": 500})).json()
        assert len(everything["items"]) == 7 and everything["next_cursor"] is None
        assert [i["id"] for i in everything["items"]] == sorted((i["id"] for i in everything["items"]), reverse=True)

        revokes = (await admin.get(AUDIT, params={"action": "revoke"})).json()["items"]
        assert sorted(i["entity_id"] for i in revokes) == sorted(ids[:2])
        one = (await admin.get(AUDIT, params={"entity": "api_key", "entity_id": ids[0]})).json()["items"]
        assert [i["action"] for i in one] == ["revoke", "create"]
        actor = everything["items"][0]["actor"]
        assert len((await admin.get(AUDIT, params={"actor": actor})).json()["items"]) == 7
        assert (await admin.get(AUDIT, params={"actor": "k_nobody"})).json()["items"] == []

        at = [datetime.fromisoformat(i["at"].replace("Z", "+00:00")) for i in everything["items"]]
        future = (max(at) + timedelta(seconds=1)).isoformat()
        assert (await admin.get(AUDIT, params={"since": future})).json()["items"] == []
        assert len((await admin.get(AUDIT, params={"until": future})).json()["items"]) == 7
        past = (min(at) - timedelta(days=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        assert len((await admin.get(AUDIT, params={"since": past})).json()["items"]) == 7

        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await admin.get(AUDIT, params=params)).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [i["id"] for i in everything["items"]]

        for bad in ("garbage", "eyJrIjoib3RoZXIiLCJ2IjpbMV19", "x" * 3000):
            r = await admin.get(AUDIT, params={"cursor": bad})
            assert r.status_code in (400, 422), r.text
            assert r.headers["content-type"].startswith("application/problem+json")
        is_problem(await admin.get(AUDIT, params={"cursor": "garbage"}), 400)
        naive = is_problem(await admin.get(AUDIT, params={"since": "2026-01-01T00:00:00"}), 422)
        assert naive["errors"][0]["pointer"] == "/query/since"
        is_problem(await admin.get(AUDIT, params={"limit": 0}), 422)
