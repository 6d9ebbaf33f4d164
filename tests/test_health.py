"""GET /health: every check its own timed block; ok, degraded and 503 (the detailed report, read with
``health.read``; tests/test_public_surface.py covers the answer without a key)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from chronos.db.base import utcnow
from chronos.db.models import JobHeartbeat
from chronos.testing import client, create_test_key, runtime_of
from kernel_support import make_plugin, wait_until

ADMIN_KEY = "b2" * 24


async def health(app, secret=None):
    secret = secret or await create_test_key(app, ["health.read"])
    async with client(app, secret) as c:
        r = await c.get("/health")
        return r.status_code, r.json()


async def test_healthy_service_reports_every_check(chronos_app, db_backend):
    async with chronos_app() as app:
        await wait_until(lambda: app.state.chronos.jobs.last_beat, what="first heartbeat")
        code, body = await health(app)
        assert code == 200 and body["status"] == "ok", body
        checks = body["checks"]
        assert checks["database"]["status"] == "ok" and checks["database"]["dialect"] == db_backend
        assert checks["search"] == {
            **checks["search"],
            "status": "ok",
            "engine": "fts5" if db_backend == "sqlite" else "tsvector",
        }
        assert checks["jobs"]["status"] == "ok" and checks["jobs"]["runners"] == 1
        assert checks["jobs"]["heartbeat_age_seconds"] >= 0
        assert checks["plugins"]["status"] == "ok"
        for name in ("database", "search", "jobs"):
            assert isinstance(checks[name]["duration_ms"], float)


async def test_failed_plugin_makes_health_degraded(chronos_app):
    def explode(ctx):
        raise RuntimeError("bad plugin")

    async with chronos_app(plugins=[("shaky", make_plugin(register_routers=explode))]) as app:
        await wait_until(lambda: app.state.chronos.jobs.last_beat, what="first heartbeat")
        code, body = await health(app)
        assert code == 200 and body["status"] == "degraded"
        assert body["checks"]["plugins"] == {"status": "degraded", "plugins": {"shaky": "failed"}}


async def test_stale_heartbeat_is_503(chronos_app):
    config = {"scheduler": {"heartbeat_seconds": 3600, "heartbeat_stale_seconds": 60}}
    async with chronos_app(config=config) as app:
        ctx = app.state.chronos
        await wait_until(lambda: ctx.jobs.last_beat, what="first heartbeat")
        async with ctx.db.write() as s:
            await s.execute(update(JobHeartbeat).values(beat_at=utcnow() - timedelta(hours=2)))
        code, body = await health(app)
        assert code == 503 and body["status"] == "error"
        jobs = body["checks"]["jobs"]
        assert jobs["status"] == "error" and jobs["heartbeat_age_seconds"] >= 7200
        assert "older than 60s" in jobs["detail"]


async def test_unreachable_database_is_503(chronos_app, db_backend, tmp_path, monkeypatch):
    if db_backend == "sqlite":
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        url = f"sqlite+aiosqlite:///{blocker}/chronos.db"
    else:
        url = "postgresql+asyncpg://postgres@127.0.0.1:1/test"  # nothing listens on port 1
    config = {"database": {"url": url, "migrate_on_start": False}}
    monkeypatch.setenv("CHRONOS_ADMIN_KEY", ADMIN_KEY)
    async with chronos_app(config=config) as app:
        code, body = await health(app, ADMIN_KEY)  # no database to hold a key: the bootstrap key
        assert code == 503 and body["status"] == "error"
        assert body["checks"]["database"]["status"] == "error" and body["checks"]["database"]["error"]
        assert "jobs" not in body["checks"]  # checks needing the database are not attempted
        async with client(app) as c:  # orchestrators: alive (do not restart), not ready (send no traffic)
            live, ready = await c.get("/health/live"), await c.get("/health/ready")
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        assert ready.json()["detail"].startswith("database: ")


async def test_live_and_ready_need_no_key(chronos_app, db_backend):
    async with chronos_app() as app:
        async with client(app) as c:
            live, ready = await c.get("/health/live"), await c.get("/health/ready")
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "detail": None}
        runtime = runtime_of(app)
        await runtime.stop()  # shutting down: no more traffic, still alive
        async with client(app) as c:
            live, ready = await c.get("/health/live"), await c.get("/health/ready")
        assert live.status_code == 200
        assert ready.status_code == 503 and ready.json()["detail"] == "starting or shutting down"
