"""The detailed ``/health`` counts only live job runners: a runner whose heartbeat is more than one
interval late (a killed process leaves its row behind) is counted apart, as for naming the leader."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from chronos.db.base import utcnow
from chronos.db.models import JobHeartbeat
from chronos.testing import client, create_test_key
from kernel_support import wait_until


async def _jobs_check(app) -> dict:
    secret = await create_test_key(app, ["health.read"])
    async with client(app, secret) as c:
        r = await c.get("/health")
    assert r.status_code == 200, r.text
    return r.json()["checks"]["jobs"]


async def test_a_stale_heartbeat_row_is_not_counted_as_a_runner(chronos_app):
    config = {"scheduler": {"heartbeat_seconds": 30, "heartbeat_stale_seconds": 600}}
    async with chronos_app(config=config) as app:
        ctx = app.state.chronos
        await wait_until(lambda: ctx.jobs.last_beat, what="first heartbeat")
        before = await _jobs_check(app)
        assert before["runners"] == 1 and before["stale_runners"] == 0, before

        # A runner killed two intervals ago (30 s each, so one interval plus jitter and slack is ~34 s).
        dead_at = utcnow() - timedelta(seconds=70)
        async with ctx.db.write() as s:
            s.add(JobHeartbeat(runner_id="host-9-killed", host="gone", started_at=dead_at, beat_at=dead_at))
        jobs = await _jobs_check(app)
        assert jobs["status"] == "ok", jobs
        assert jobs["runners"] == 1 and jobs["stale_runners"] == 1, jobs
        assert jobs["heartbeat_age_seconds"] < 30  # the live runner's beat, not the stale one

        # The same row beating again counts as live.
        async with ctx.db.write() as s:
            row = (await s.execute(select(JobHeartbeat).where(JobHeartbeat.runner_id == "host-9-killed"))).scalar_one()
            row.beat_at = utcnow()
        jobs = await _jobs_check(app)
        assert jobs["runners"] == 2 and jobs["stale_runners"] == 0, jobs


async def test_only_stale_rows_count_no_runner_and_no_leader(chronos_app):
    config = {"scheduler": {"heartbeat_seconds": 30, "heartbeat_stale_seconds": 600}}
    async with chronos_app(config=config) as app:
        ctx = app.state.chronos
        await wait_until(lambda: ctx.jobs.last_beat, what="first heartbeat")
        dead_at = utcnow() - timedelta(seconds=70)
        async with ctx.db.write() as s:
            rows = (await s.execute(select(JobHeartbeat))).scalars().all()
            for row in rows:  # every runner, the leader too, last beat 70 s ago
                row.beat_at = dead_at
        jobs = await _jobs_check(app)
        assert jobs["runners"] == 0 and jobs["stale_runners"] == len(rows) >= 1, jobs
        assert jobs["leader"] is None
        assert jobs["heartbeat_age_seconds"] >= 70
