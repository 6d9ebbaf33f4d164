"""The job runner: schedules, no overlap, heartbeat, graceful shutdown, leadership."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from chronos.context import PluginContext
from chronos.db.engine import Database
from chronos.db.migrate import migrate
from chronos.db.models import JobHeartbeat, JobRun
from chronos.jobs import JobBusy, JobRunner
from chronos.plugin import Job
from chronos.testing import make_test_settings
from kernel_support import is_problem, make_plugin, wait_until


def jobs_plugin(*jobs: Job):
    return make_plugin(register_jobs=lambda ctx: list(jobs))


async def runs(database, job: str) -> list[JobRun]:
    db = Database(database.url, schema=database.schema)
    try:
        async with db.read() as s:
            return list((await s.execute(select(JobRun).where(JobRun.job == job).order_by(JobRun.id))).scalars())
    finally:
        await db.dispose()


async def test_interval_job_runs_on_schedule_and_is_recorded(chronos_app, database):
    ticks: list[str] = []

    async def tick(job):
        ticks.append(job.trigger)

    async def broken(job):
        raise ValueError("nothing to do")

    plugin = jobs_plugin(Job("t.tick", tick, interval_seconds=0.2), Job("t.broken", broken, interval_seconds=0.2))
    async with chronos_app(plugins=[("t", plugin)], run_jobs=True) as app:
        runner = app.state.chronos.jobs
        await wait_until(lambda: runner.is_leader, what="leadership")
        await wait_until(lambda: len(ticks) >= 2, what="two scheduled runs")
        await wait_until(lambda: "t.broken" in runner.running and runner.running["t.broken"].done(), what="failing run")
    assert set(ticks) == {"schedule"}
    recorded = await runs(database, "t.tick")
    assert len(recorded) >= 2 and all(r.trigger == "schedule" for r in recorded)
    assert all(r.status == "ok" and r.finished_at >= r.started_at for r in recorded if r.status != "running")
    failed = await runs(database, "t.broken")
    assert failed and failed[0].status == "error" and failed[0].error == "ValueError: nothing to do"


async def test_runs_of_one_job_never_overlap(chronos_app, api_client):
    release = asyncio.Event()
    active, peak = [0], [0]

    async def slow(job):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        try:
            await release.wait()
        finally:
            active[0] -= 1

    # Scheduled every 0.05 s while one run blocks: the schedule must skip, not stack.
    async with chronos_app(
        plugins=[("t", jobs_plugin(Job("t.slow", slow, interval_seconds=0.05)))], run_jobs=True
    ) as app:
        runner = app.state.chronos.jobs
        await wait_until(lambda: "t.slow" in runner.running, what="first run")
        with pytest.raises(JobBusy):
            runner.run_now("t.slow")
        admin = await api_client(app, scopes=["admin"])
        body = is_problem(await admin.post("/api/v1/jobs/t.slow/run"), 409)
        assert "already running" in body["detail"]
        listed = {j["name"]: j for j in (await admin.get("/api/v1/jobs")).json()}
        assert listed["t.slow"]["running"] is True and listed["t.slow"]["schedule"] == "every 0.05s"
        await asyncio.sleep(0.3)  # several schedule ticks while the run blocks
        assert peak[0] == 1
        release.set()
        await runner.running["t.slow"]
        r = await admin.post("/api/v1/jobs/t.slow/run")
        assert r.status_code in (202, 409)  # the schedule may have started the next run already
        is_problem(await admin.post("/api/v1/jobs/no.such.job/run"), 404)
    assert peak[0] == 1


async def test_manual_run_is_audited(chronos_app, api_client):
    async def noop(job):
        return None

    async with chronos_app(plugins=[("t", jobs_plugin(Job("t.noop", noop)))]) as app:
        admin = await api_client(app, scopes=["admin"])
        r = await admin.post("/api/v1/jobs/t.noop/run")
        assert r.status_code == 202 and r.json() == {"job": "t.noop", "status": "started"}
        items = (await admin.get("/api/v1/audit", params={"entity": "job"})).json()["items"]
        assert [(i["entity_id"], i["action"]) for i in items] == [("t.noop", "run")]


async def test_heartbeat_row_tracks_the_runner(chronos_app):
    async with chronos_app(run_jobs=True) as app:
        ctx = app.state.chronos
        runner = ctx.jobs
        await wait_until(lambda: runner.is_leader, what="leadership")

        async def leader_row():
            async with ctx.db.read() as s:
                row = (await s.execute(select(JobHeartbeat).where(JobHeartbeat.runner_id == runner.runner_id))).scalar()
            return row if row is not None and row.is_leader else None

        row = await wait_until(leader_row, what="heartbeat row marked leader")
        first = row.beat_at
        await wait_until(lambda: _newer(ctx, runner.runner_id, first), what="a later heartbeat")
    async with ctx.db.read() as s:
        assert (await s.execute(select(JobHeartbeat))).scalars().all() == []  # removed on shutdown
    await ctx.db.dispose()


async def _newer(ctx, runner_id, than) -> bool:
    async with ctx.db.read() as s:
        row = (await s.execute(select(JobHeartbeat).where(JobHeartbeat.runner_id == runner_id))).scalar()
    return row is not None and row.beat_at > than


async def test_shutdown_waits_for_running_jobs_then_cancels(chronos_app, database):
    seen: list[str] = []

    async def short(job):
        await asyncio.sleep(0.2)
        seen.append("short done")

    async def endless(job):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("endless cancelled")
            raise

    plugin = jobs_plugin(Job("t.short", short), Job("t.endless", endless))
    async with chronos_app(plugins=[("t", plugin)], config={"scheduler": {"shutdown_timeout_seconds": 1}}) as app:
        runner = app.state.chronos.jobs
        runner.run_now("t.short")
        runner.run_now("t.endless")
        await asyncio.sleep(0)
    assert sorted(seen) == ["endless cancelled", "short done"]
    assert [r.status for r in await runs(database, "t.short")] == ["ok"]
    (cancelled,) = await runs(database, "t.endless")
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None


async def test_invalid_cron_stops_startup(chronos_app):
    async def noop(job):
        return None

    with pytest.raises(ValueError):
        async with chronos_app(plugins=[("t", jobs_plugin(Job("t.cron", noop, cron="every tuesday")))]):
            pass


async def test_cron_job_is_scheduled_with_jitter(chronos_app, api_client):
    async def noop(job):
        return None

    plugin = jobs_plugin(Job("t.cron", noop, cron="*/5 * * * *", jitter_seconds=30))
    async with chronos_app(plugins=[("t", plugin)], run_jobs=True) as app:
        runner = app.state.chronos.jobs
        await wait_until(lambda: runner.is_leader, what="leadership")
        scheduled = runner._scheduler.get_job("t.cron")
        assert scheduled.next_run_time.minute % 5 == 0 and scheduled.trigger.jitter == 30
        admin = await api_client(app, scopes=["admin"])
        (listed,) = [j for j in (await admin.get("/api/v1/jobs")).json() if j["name"] == "t.cron"]
        assert listed["schedule"] == "cron */5 * * * *"


async def test_exactly_one_leader_and_failover(database):
    await migrate(database.url, [], schema=database.schema)
    settings = make_test_settings(database, {"scheduler": {"leader_retry_seconds": 0.2, "heartbeat_seconds": 0.2}})
    fired: list[str] = []

    def make_runner(label: str) -> JobRunner:
        async def tick(job):
            fired.append(label)

        return JobRunner(PluginContext(settings), [("t", Job("t.tick", tick, interval_seconds=0.1))])

    a, b = make_runner("a"), make_runner("b")
    try:
        await a.start()
        await b.start()
        await wait_until(lambda: a.is_leader or b.is_leader, what="a leader")
        await asyncio.sleep(1.0)  # five retry periods for the follower
        assert [a.is_leader, b.is_leader].count(True) == 1
        leader, follower = (a, b) if a.is_leader else (b, a)
        leader_label = "a" if leader is a else "b"
        await wait_until(lambda: fired, what="a scheduled run")
        assert set(fired) == {leader_label}  # the follower runs no schedules

        await leader.stop()
        await wait_until(lambda: follower.is_leader, what="failover")
        fired.clear()
        await wait_until(lambda: fired, what="a run on the new leader")
        assert set(fired) == {"b" if leader_label == "a" else "a"}
    finally:
        await a.stop()
        await b.stop()
        for r in (a, b):
            if r.ctx.has_db:
                await r.ctx.db.dispose()


@pytest.mark.backends("postgresql")
async def test_leader_whose_connection_dies_is_replaced(database):
    """The advisory lock dies with the leader's connection; someone (exactly one) takes over."""
    from chronos.jobs import leader_lock_key

    await migrate(database.url, [], schema=database.schema)
    settings = make_test_settings(database, {"scheduler": {"leader_retry_seconds": 0.2}})

    async def tick(job):
        return None

    a = JobRunner(PluginContext(settings), [("t", Job("t.tick", tick, interval_seconds=60))])
    b = JobRunner(PluginContext(settings), [("t", Job("t.tick", tick, interval_seconds=60))])
    try:
        await a.start()
        await b.start()
        await wait_until(lambda: a.is_leader or b.is_leader, what="a leader")
        leader = a if a.is_leader else b
        pid = (await leader._leader_conn.execute(text("SELECT pg_backend_pid()"))).scalar()
        admin = Database(database.url)
        try:
            async with admin.write() as s:
                await s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

            async def settled():
                holders = [r for r in (a, b) if r.is_leader and r._leader_conn is not None]
                if len(holders) != 1:
                    return False
                try:
                    holder_pid = (await holders[0]._leader_conn.execute(text("SELECT pg_backend_pid()"))).scalar()
                    await holders[0]._leader_conn.commit()
                except Exception:  # noqa: BLE001 - the old leader has not noticed yet
                    return False
                async with admin.read() as s:
                    lock_pids = (
                        (
                            await s.execute(
                                text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = :k AND granted"),
                                {"k": leader_lock_key(database.schema) & 0xFFFFFFFF},
                            )
                        )
                        .scalars()
                        .all()
                    )
                return holder_pid != pid and lock_pids == [holder_pid]

            await wait_until(settled, timeout=15, what="a single live leader holding the lock")
        finally:
            await admin.dispose()
    finally:
        await a.stop()
        await b.stop()
        for r in (a, b):
            if r.ctx.has_db:
                await r.ctx.db.dispose()


async def test_leadership_won_during_stop_starts_no_scheduler(database):
    """A leadership turn still under way when stop() begins (awaiting the lock on PostgreSQL)
    must not leave a scheduler running after stop() returns."""
    await migrate(database.url, [], schema=database.schema)
    settings = make_test_settings(database, {"scheduler": {"leader_retry_seconds": 0.05}})
    fired: list[str] = []

    async def tick(job):
        fired.append("tick")

    runner = JobRunner(PluginContext(settings), [("t", Job("t.tick", tick, interval_seconds=0.05, run_at_start=True))])
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_win() -> bool:
        entered.set()
        await release.wait()
        return True

    runner._become_leader = slow_win  # type: ignore[method-assign]
    try:
        await runner.start()
        await asyncio.wait_for(entered.wait(), 5)
        stopping = asyncio.create_task(runner.stop())
        await asyncio.sleep(0.05)
        release.set()
        await stopping
        assert runner._scheduler is None and not runner.is_leader
        fired.clear()
        await asyncio.sleep(0.3)
        assert fired == []
    finally:
        await runner.stop()
        if runner.ctx.has_db:
            await runner.ctx.db.dispose()


async def test_runs_of_a_stopped_runner_are_closed_and_a_live_runners_run_is_not_doubled(chronos_app, api_client):
    """A runner killed mid-run leaves its row "running": the leader marks it interrupted once the
    runner stops beating. While another live process runs a job, a manual run is refused."""
    from datetime import timedelta

    from chronos.db.base import utcnow

    started = asyncio.Event()

    async def work(job):
        started.set()

    config = {"scheduler": {"heartbeat_seconds": 0.5, "heartbeat_stale_seconds": 30}}
    plugin = jobs_plugin(Job("t.work", work), Job("t.other", work))
    async with chronos_app(plugins=[("t", plugin)], config=config, run_jobs=True) as app:
        ctx = app.state.chronos
        runner = ctx.jobs
        long_ago = utcnow() - timedelta(seconds=120)
        async with ctx.db.write() as s:
            s.add(JobHeartbeat(runner_id="host-1-dead", host="host", started_at=long_ago, beat_at=long_ago))
            s.add(JobHeartbeat(runner_id="host-2-live", host="host", started_at=long_ago, beat_at=utcnow()))
            s.add(
                JobRun(
                    job="t.other", trigger="schedule", status="running", started_at=long_ago, runner_id="host-1-dead"
                )
            )
            s.add(
                JobRun(job="t.work", trigger="schedule", status="running", started_at=long_ago, runner_id="host-2-live")
            )

        async def statuses():
            async with ctx.db.read() as s:
                rows = (await s.execute(select(JobRun).order_by(JobRun.id))).scalars().all()
            return {r.runner_id: r for r in rows}

        await wait_until(lambda: runner.is_leader, what="leadership")
        rows = await wait_until(
            lambda: _when(statuses(), lambda r: r["host-1-dead"].status == "interrupted"), what="the dead run closed"
        )
        assert "stopped without finishing" in rows["host-1-dead"].error
        assert rows["host-1-dead"].finished_at == long_ago  # its runner's last heartbeat: last seen alive
        assert rows["host-2-live"].status == "running"  # its runner still beats

        admin = await api_client(app, scopes=["admin"])
        async with ctx.db.write() as s:  # it beats again (live: at most one interval late)
            beat = (await s.execute(select(JobHeartbeat).where(JobHeartbeat.runner_id == "host-2-live"))).scalar()
            beat.beat_at = utcnow()
        body = is_problem(await admin.post("/api/v1/jobs/t.work/run"), 409)
        assert "another process (host-2-live)" in body["detail"]
        assert not started.is_set() and len(await statuses()) == 2
        # Once that runner stops beating, its run no longer blocks a manual one.
        async with ctx.db.write() as s:
            beat = (await s.execute(select(JobHeartbeat).where(JobHeartbeat.runner_id == "host-2-live"))).scalar()
            beat.beat_at = long_ago
        r = await admin.post("/api/v1/jobs/t.work/run")
        assert r.status_code == 202, r.text
        await wait_until(started.is_set, what="the manual run")


async def _when(rows_coro, check):
    rows = await rows_coro
    return rows if check(rows) else None
