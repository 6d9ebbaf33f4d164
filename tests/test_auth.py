"""API keys: both headers, every 401 and 403, the bootstrap key, the keys API and CLI, route scopes."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from chronos.app import create_app, effective_routes, route_scope
from chronos.db.models import ApiKey
from chronos.testing import client, create_test_key, make_test_settings
from kernel_support import db_config, invoke_cli, invoke_cli_async, is_problem, write_config

PUBLIC_PATHS = {"/health", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}
KEYS = "/api/v1/keys"


def unauthorized(r) -> dict:
    body = is_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    return body


async def test_bearer_and_x_api_key_are_both_accepted(chronos_app):
    async with chronos_app() as app:
        secret = await create_test_key(app, ["admin"])
        async with client(app) as c:
            assert (await c.get(KEYS, headers={"Authorization": f"Bearer {secret}"})).status_code == 200
            assert (await c.get(KEYS, headers={"Authorization": f"bearer {secret}"})).status_code == 200
            assert (await c.get(KEYS, headers={"X-API-Key": secret})).status_code == 200


async def test_x_api_key_can_be_turned_off(chronos_app):
    async with chronos_app(config={"auth": {"accept_x_api_key": False}}) as app:
        secret = await create_test_key(app, ["admin"])
        async with client(app) as c:
            unauthorized(await c.get(KEYS, headers={"X-API-Key": secret}))


BAD_CREDENTIALS = {
    "missing": {},
    "unknown": {"Authorization": "Bearer chr_k_000000000000_unknownunknownunknown"},
    "unknown-x-api-key": {"X-API-Key": "chr_k_000000000000_unknownunknownunknown"},
    "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    "empty-bearer": {"Authorization": "Bearer "},
    "malformed": {"Authorization": "Bearer not-a-chronos-key"},
    "truncated": {"Authorization": "Bearer chr_k_short"},
    "huge": {"X-API-Key": "x" * 500},
}


async def test_missing_unknown_and_malformed_keys_get_401(chronos_app):
    async with chronos_app() as app, client(app) as c:
        for case, headers in BAD_CREDENTIALS.items():
            r = await c.get(KEYS, headers=headers)
            assert r.status_code == 401, case
            unauthorized(r)


async def test_tampered_secret_gets_401(chronos_app):
    async with chronos_app() as app:
        secret = await create_test_key(app, ["admin"])
        async with client(app) as c:
            unauthorized(await c.get(KEYS, headers={"Authorization": f"Bearer {secret[:-2]}xx"}))


async def test_revoked_and_expired_keys_get_401(chronos_app, api_client):
    # The key cache is off so that the direct database edit below acts at once.
    async with chronos_app(config={"auth": {"key_cache_seconds": 0}}) as app:
        admin = await api_client(app, scopes=["admin"])
        victim = await create_test_key(app, ["events.read"], name="victim")
        expiring = await create_test_key(app, ["admin"], name="expiring")
        async with client(app, victim) as c:
            assert (await c.get("/api/v1/keys")).status_code == 403  # valid, but lacks the scope
            keys = {k["name"]: k["id"] for k in (await admin.get(KEYS)).json()}
            r = await admin.delete(f"{KEYS}/{keys['victim']}")
            assert r.status_code == 200 and r.json()["status"] == "revoked"
            body = unauthorized(await c.get("/api/v1/keys"))
            assert "revoked or expired" in body["detail"]
        async with client(app, expiring) as c:
            assert (await c.get(KEYS)).status_code == 200
            ctx = app.state.chronos
            async with ctx.db.write() as s:
                await s.execute(
                    update(ApiKey)
                    .where(ApiKey.id == keys["expiring"])
                    .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
                )
            unauthorized(await c.get(KEYS))
        listed = {k["name"]: k["status"] for k in (await admin.get(KEYS)).json()}
        assert listed["victim"] == "revoked" and listed["expiring"] == "expired"


async def test_missing_scope_is_403_problem(chronos_app, api_client):
    async with chronos_app() as app:
        c = await api_client(app, scopes=["events.read"])
        body = is_problem(await c.post(KEYS, json={"name": "x", "scopes": ["admin"]}), 403)
        assert body["required_scope"] == "admin" and "lacks the scope 'admin'" in body["detail"]


async def test_bootstrap_admin_key_from_environment(chronos_app, monkeypatch):
    bootstrap = "bootstrap-secret-0123456789"
    monkeypatch.setenv("CHRONOS_ADMIN_KEY", bootstrap)
    async with chronos_app() as app, client(app, bootstrap) as c:
        r = await c.post(KEYS, json={"name": "first", "scopes": ["events.read"]})
        assert r.status_code == 201, r.text
        audit = (await c.get("/api/v1/audit")).json()["items"]
        assert audit[0]["actor"] == "bootstrap" and audit[0]["entity_id"] == r.json()["id"]
        monkeypatch.setenv("CHRONOS_ADMIN_KEY", "short")  # too short to be accepted
        async with client(app, "short") as weak:
            unauthorized(await weak.get(KEYS))


async def test_revoking_the_requesting_key_needs_force(chronos_app):
    async with chronos_app(config={"auth": {"key_cache_seconds": 0}}) as app:
        secret = await create_test_key(app, ["admin"], name="me")
        other = await create_test_key(app, ["admin"], name="other")
        async with client(app, secret) as c:
            ids = {k["name"]: k["id"] for k in (await c.get(KEYS)).json()}
            body = is_problem(await c.delete(f"{KEYS}/{ids['me']}"), 409)
            assert body["type"].endswith("key-in-use") and "force=true" in body["detail"]
            assert (await c.get(KEYS)).status_code == 200  # still works; nothing was revoked
            # Another admin key is revoked as before; force is only needed for one's own.
            assert (await c.delete(f"{KEYS}/{ids['other']}")).json()["status"] == "revoked"
            r = await c.delete(f"{KEYS}/{ids['me']}", params={"force": "true"})
            assert r.status_code == 200 and r.json()["status"] == "revoked"
            unauthorized(await c.get(KEYS))
        async with client(app, other) as c:
            unauthorized(await c.get(KEYS))


async def test_the_bootstrap_key_cannot_be_revoked(chronos_app, monkeypatch, database, tmp_path):
    bootstrap = "bootstrap-secret-0123456789"
    monkeypatch.setenv("CHRONOS_ADMIN_KEY", bootstrap)
    async with chronos_app() as app:
        admin = await create_test_key(app, ["admin"], name="admin")
        for secret in (bootstrap, admin):
            async with client(app, secret) as c:
                for params in ({}, {"force": "true"}):
                    body = is_problem(await c.delete(f"{KEYS}/bootstrap", params=params), 409)
                    assert "CHRONOS_ADMIN_KEY" in body["detail"]
        async with client(app, bootstrap) as c:
            assert (await c.get(KEYS)).status_code == 200
    cfg = write_config(tmp_path / "c.yaml", db_config(database, plugins={"enabled": []}))
    res = await invoke_cli_async("keys", "revoke", "bootstrap", config=cfg)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(
        "error: The bootstrap key comes from CHRONOS_ADMIN_KEY"
    )


def test_openapi_documents_forced_revocation(database):
    settings = make_test_settings(database, {"plugins": {"enabled": []}})
    operation = create_app(settings, env={}).openapi()["paths"]["/api/v1/keys/{key_id}"]["delete"]
    (force,) = [p for p in operation["parameters"] if p["name"] == "force"]
    assert force["in"] == "query" and force["schema"]["default"] is False and force["description"]
    assert "application/problem+json" in operation["responses"]["409"]["content"]


async def test_keys_api_shows_the_secret_once_and_never_the_hash(chronos_app, api_client):
    async with chronos_app() as app:
        admin = await api_client(app, scopes=["admin"])
        r = await admin.post(
            KEYS,
            json={
                "name": "robot",
                "scopes": ["events.read", "events.write"],
                "systems": ["home-1"],
                "expires_in_seconds": 3600,
            },
        )
        assert r.status_code == 201, r.text
        created = r.json()
        secret = created["secret"]
        assert secret.startswith(f"chr_{created['id']}_")
        assert created["prefix"] == secret[: len(created["prefix"])] and len(created["prefix"]) < len(secret) // 2
        assert created["scopes"] == ["events.read", "events.write"] and created["systems"] == ["home-1"]
        expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
        assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)

        async with app.state.chronos.db.read() as s:
            stored = (await s.execute(select(ApiKey).where(ApiKey.id == created["id"]))).scalar_one()
        assert secret not in stored.secret_hash
        listing = await admin.get(KEYS)
        assert secret not in listing.text and stored.secret_hash not in listing.text and "secret" not in listing.text
        (row,) = [k for k in listing.json() if k["id"] == created["id"]]
        assert row["status"] == "active" and "secret_hash" not in row

        async with client(app, secret) as robot:
            assert (await robot.get("/api/v1/audit")).status_code == 403
        assert is_problem(await admin.delete(f"{KEYS}/k_nosuchkey00"), 404)


INVALID_KEY_REQUESTS = [
    ({"name": "x", "scopes": ["no.such.scope"]}, "/scopes"),
    ({"name": "x", "scopes": []}, "/scopes"),
    ({"name": "", "scopes": ["admin"]}, "/name"),
    ({"name": "x", "scopes": ["admin"], "systems": ["bad system!"]}, "/systems/0"),
    ({"name": "x", "scopes": ["admin"], "expires_in_seconds": 1}, "/expires_in_seconds"),
    ({"name": "x", "scopes": ["admin"], "extra": 1}, "/extra"),
]


async def test_invalid_key_requests_are_422_and_write_nothing(chronos_app, api_client):
    async with chronos_app() as app:
        admin = await api_client(app, scopes=["admin"])
        before = len((await admin.get(KEYS)).json())
        for body, pointer in INVALID_KEY_REQUESTS:
            problem = is_problem(await admin.post(KEYS, json=body), 422)
            assert pointer in [e["pointer"] for e in problem["errors"]], (body, problem)
        assert len((await admin.get(KEYS)).json()) == before
        assert [i for i in (await admin.get("/api/v1/audit")).json()["items"] if i["entity"] == "api_key"] == []


async def test_max_key_lifetime_is_enforced(chronos_app, api_client):
    async with chronos_app(config={"auth": {"max_key_lifetime_days": 7}}) as app:
        admin = await api_client(app, scopes=["admin"])
        is_problem(await admin.post(KEYS, json={"name": "forever", "scopes": ["events.read"]}), 422)
        is_problem(
            await admin.post(KEYS, json={"name": "long", "scopes": ["events.read"], "expires_in_seconds": 8 * 86400}),
            422,
        )
        r = await admin.post(KEYS, json={"name": "ok", "scopes": ["events.read"], "expires_in_seconds": 86400})
        assert r.status_code == 201, r.text


# -- the CLI -----------------------------------------------------------------------------------


async def test_keys_cli_create_list_revoke(database, chronos_app, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", db_config(database, plugins={"enabled": []}))
    # No plugin is enabled: only the kernel's scopes exist (plugins register the others).
    res = await invoke_cli_async(
        "keys",
        "create",
        "--name",
        "poller",
        "--scope",
        "events.read",
        "--scope",
        "events.write",
        "--system",
        "home-1",
        "--expires",
        "30d",
        "--json",
        config=cfg,
    )
    assert res.returncode == 0, res.stderr
    created = json.loads(res.stdout)
    assert set(created) >= {"id", "secret", "scopes", "systems", "expires_at", "prefix"}
    assert created["scopes"] == ["events.read", "events.write"] and created["systems"] == ["home-1"]
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(days=29, hours=23) < expires - datetime.now(UTC) <= timedelta(days=30)

    res = await invoke_cli_async("keys", "list", "--json", config=cfg)
    listed = json.loads(res.stdout)
    (row,) = [k for k in listed if k["id"] == created["id"]]
    assert row["status"] == "active" and "secret" not in row and created["secret"] not in res.stdout

    # A revocation from another process acts within auth.key_cache_seconds; off here.
    async with chronos_app(config={"auth": {"key_cache_seconds": 0}}) as app:
        async with client(app, created["secret"]) as c:
            assert (await c.get("/api/v1/plugins")).status_code == 403  # the key works, but is not admin
            res = await invoke_cli_async("keys", "revoke", created["id"], config=cfg)
            assert res.returncode == 0 and res.stdout.strip() == f"revoked {created['id']}"
            unauthorized(await c.get("/api/v1/plugins"))
        # The CLI's changes are audited like the API's.
        from chronos.db.models import AuditEntry

        async with app.state.chronos.db.read() as s:
            rows = (await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
        assert [(r.entity_id, r.action, r.actor) for r in rows] == [
            (created["id"], "create", "cli"),
            (created["id"], "revoke", "cli"),
        ]


@pytest.mark.backends("sqlite")
def test_keys_cli_rejects_bad_input(database, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", db_config(database, plugins={"enabled": []}))
    res = invoke_cli("keys", "create", "--name", "x", "--scope", "events.read", "--expires", "soon", config=cfg)
    assert res.returncode == 2 and "invalid duration 'soon'" in res.stderr
    res = invoke_cli("keys", "create", "--name", "x", "--scope", "no.such", config=cfg)
    assert res.returncode == 2 and "Unknown scope(s): no.such" in res.stderr
    res = invoke_cli("keys", "create", "--name", "x", "--scope", "events.read", "--system", "bad id!", config=cfg)
    assert res.returncode == 2 and "invalid system id 'bad id!'" in res.stderr
    res = invoke_cli("keys", "revoke", "k_nosuchkey00", config=cfg)
    assert res.returncode == 1 and "no key with id" in res.stderr


# -- every route declares a scope ---------------------------------------------------------------


def test_every_route_declares_its_scope(database):
    """With every installed plugin enabled, no route is reachable without a declared scope."""
    app = create_app(make_test_settings(database, {"plugins": {"strict": True}}), plugins=None, env={})
    undeclared, public = [], []
    routes = effective_routes(app.routes)
    assert len(routes) > 10
    for route in routes:
        path = route.path
        original = getattr(route, "original_route", route)
        if path in PUBLIC_PATHS or type(original).__name__ == "Mount":
            continue
        if not hasattr(route, "dependant"):
            undeclared.append(f"{sorted(getattr(route, 'methods', None) or [])} {path} (not an API route)")
            continue
        declared, scope = route_scope(route)
        if not declared:
            undeclared.append(f"{sorted(route.methods)} {path}")
        elif scope is None:
            public.append((path, public_reason(route)))
    assert not undeclared, "routes without a declared scope:\n" + "\n".join(undeclared)
    # Routes outside the list above may be public only on purpose, saying why.
    assert all(reason for _, reason in public), public


def public_reason(route) -> str | None:
    from chronos.auth import Public

    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Public):
            return dep.call.reason
        stack.extend(dep.dependencies)
    return None


async def test_key_cache_bounds_out_of_band_revocation(chronos_app, api_client):
    """Verified keys are cached briefly: a revocation made through this process acts
    at once, one made elsewhere (another replica, the CLI) within the TTL."""
    async with chronos_app(config={"auth": {"key_cache_seconds": 0.5}}) as app:
        admin = await api_client(app, scopes=["admin"])
        first = await create_test_key(app, ["events.read"], name="first")
        second = await create_test_key(app, ["events.read"], name="second")
        ids = {k["name"]: k["id"] for k in (await admin.get(KEYS)).json()}
        async with client(app, first) as c1, client(app, second) as c2:
            assert (await c1.get("/api/v1/keys")).status_code == 403
            assert (await c2.get("/api/v1/keys")).status_code == 403
            assert (await admin.delete(f"{KEYS}/{ids['first']}")).status_code == 200
            unauthorized(await c1.get("/api/v1/keys"))  # same process: immediate
            async with app.state.chronos.db.write() as s:
                await s.execute(update(ApiKey).where(ApiKey.id == ids["second"]).values(revoked_at=datetime.now(UTC)))
            assert (await c2.get("/api/v1/keys")).status_code == 403  # still cached
            await asyncio.sleep(0.6)
            unauthorized(await c2.get("/api/v1/keys"))


async def test_revocation_reaches_other_replicas_within_one_second(chronos_app, api_client):
    """Two apps on one database, default settings: a key revoked through one is refused
    by the other within a second (auth.key_cache_seconds is the revocation delay)."""
    async with chronos_app() as a, chronos_app() as b:
        assert b.state.chronos.settings.kernel.auth.key_cache_seconds <= 1
        admin_a = await api_client(a, scopes=["admin"])
        secret = await create_test_key(a, ["admin"], name="replica")
        key_id = next(k["id"] for k in (await admin_a.get(KEYS)).json() if k["name"] == "replica")
        async with client(b, secret) as on_b:
            assert (await on_b.get(KEYS)).status_code == 200  # accepted, and now cached on b
            assert (await admin_a.delete(f"{KEYS}/{key_id}")).status_code == 200
            revoked = time.monotonic()
            await asyncio.sleep(max(0.0, revoked + 1.01 - time.monotonic()))
            unauthorized(await on_b.get(KEYS))
