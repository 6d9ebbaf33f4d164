"""Scheduler leader failover with real processes: one ``chronos serve --no-jobs`` replica and
several ``chronos worker`` processes on one database; the leader is SIGKILLed (no shutdown code
runs), a follower takes the schedules over, no job runs twice at once, and the detailed
``/health`` stops naming the dead leader within one heartbeat."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from chronos.jobs import leader_window_seconds
from production_support import deployment, jobs_health, overlapping_runs, runner_id, wait_ready

HEARTBEAT = 1.0
LEADER_RETRY = 1.0  # how often a follower tries to take the lock: the lease a dead leader leaves
TAKEOVER_BOUND = LEADER_RETRY + 5


def wait_for_leader(url: str, candidates: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = jobs_health(url)["leader"]
        if leader in candidates:
            return str(leader)
        time.sleep(0.05)
    raise AssertionError(f"no leader among {sorted(candidates)} within {timeout:g}s")


async def test_a_killed_leader_is_replaced_and_never_named_again(database, tmp_path):
    # PostgreSQL: three workers, the leader killed twice; SQLite (one machine): two workers, once.
    n_workers = 3 if database.backend == "postgresql" else 2
    window = leader_window_seconds(HEARTBEAT)
    with deployment(
        database,
        tmp_path,
        plugins={"enabled": []},
        scheduler={"heartbeat_seconds": HEARTBEAT, "leader_retry_seconds": LEADER_RETRY},
        audit={"checkpoint_seconds": 0.3},  # the kernel's own scheduled job, a run every 0.3 s
    ) as dep:
        api = dep.serve()
        started = [dep.worker() for _ in range(n_workers)]
        wait_ready(api)
        workers = {runner_id(w): w for w in started}
        kills: list[datetime] = []
        for _ in range(n_workers - 1):
            alive = {rid for rid, w in workers.items() if w.alive()}
            leader = wait_for_leader(api.url, alive, timeout=30)
            follower_ids = alive - {leader}
            await _wait_runs_after(dep, datetime.now(UTC), what="scheduled runs on the leader")

            kill_at, kill_mono = datetime.now(UTC), time.monotonic()
            workers[leader].kill()
            kills.append(kill_at)
            # Sample /health until a follower is named and a full leader window has passed.
            samples: list[tuple[float, str | None]] = []
            while time.monotonic() - kill_mono < TAKEOVER_BOUND + window:
                sent = time.monotonic() - kill_mono
                samples.append((sent, jobs_health(api.url)["leader"]))
                if sent > window and samples[-1][1] in follower_ids:
                    break
                time.sleep(0.05)
            late = [(round(t, 2), who) for t, who in samples if t > window and who == leader]
            assert not late, f"/health still named the dead leader {window:g}s after the kill: {late}"
            named = [t for t, who in samples if who in follower_ids]
            assert named and named[0] <= TAKEOVER_BOUND, samples
            first_run = await _wait_runs_after(dep, kill_at, what="scheduled runs after the kill")
            assert first_run - kill_at <= timedelta(seconds=TAKEOVER_BOUND), (kill_at, first_run)
            last_dead = max((t for t, who in samples if who == leader), default=0.0)
            print(
                f"\nfailover [{database.backend}]: dead leader last named {last_dead:.2f}s after the kill,"
                f" new leader named after {named[0]:.2f}s, first run after {(first_run - kill_at).total_seconds():.2f}s"
            )

        # Enough runs on the last leader that overlaps would show (a quiet machine gets here fast).
        deadline = time.monotonic() + 30
        while len(runs := await dep.job_runs()) <= 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        now = datetime.now(UTC)
        intervals = []
        for run in runs:
            # A run cut short by a kill stays "running" (until the leader marks it interrupted, after
            # heartbeat_stale_seconds); it ended, at the latest, at the first kill after its start.
            cut = run.status in ("running", "interrupted")
            end = next((k for k in kills if k >= run.started_at), now) if cut else run.finished_at
            intervals.append((run.job, run.started_at, end))
        assert len(runs) > 10
        assert overlapping_runs(intervals) == []
        assert {r.job for r in runs} == {"audit.checkpoint"}


async def _wait_runs_after(dep, since: datetime, *, what: str, timeout: float = TAKEOVER_BOUND + 10) -> datetime:
    """The start of the first job run after ``since``, once two have started after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = sorted(r.started_at for r in await dep.job_runs() if r.started_at > since)
        if len(later) >= 2:
            return later[0]
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
