"""A 50k-event calendar (10k on SQLite) synced by a real ``chronos worker`` that is SIGKILLed
ten times at random points of the sync (the worker and its parser processes; no shutdown code runs), then
left to finish: the store holds exactly the source's events, once each, and the audit log
verifies (``chronos audit verify``)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from gen_events import iter_events, write_ics
from kernel_support import run_cli
from production_support import deployment

#: 50k events on PostgreSQL (the deployment with several processes); SQLite, one machine with
#: one worker, gets 10k to keep the suite's time modest: ten restarts each parse the whole file.
EVENTS = {"postgresql": 50_000, "sqlite": 10_000}
BATCH = 500
KILLS = 10
CAP = 15  # seconds into a run at which it is killed even before it reached its target batch
LAST_RUN = "SELECT id, status, batches FROM sync_runs WHERE calendar_id = 'big' ORDER BY id DESC LIMIT 1"


@pytest.fixture(scope="module")
def calendars(tmp_path_factory):
    """``calendars(n)``: a calendar file of ``n`` events (written once per size) and its uids."""
    made: dict[int, tuple] = {}

    def make(n: int) -> tuple:
        if n not in made:
            path = write_ics(tmp_path_factory.mktemp("ics") / "big.ics", n)
            made[n] = path, sorted(e["uid"] for e in iter_events(n))
        return made[n]

    return make


async def test_a_sync_killed_ten_times_converges_to_the_source(database, tmp_path, calendars):
    n = EVENTS[database.backend]
    ics, uids = calendars(n)
    rng = random.Random()
    # Ten random points across the sync, in batches stored (0: while the file is still parsed). Each
    # restart replays the stored batches (unchanged entries cost no write) and goes further; a run
    # slower than that (a loaded machine) is cut CAP seconds in, wherever it is.
    targets = sorted(rng.randrange(0, n // BATCH - 2) for _ in range(KILLS))
    started = time.monotonic()
    with deployment(
        database,
        tmp_path,
        plugins={"enabled": ["events", "ics", "normalize"]},
        ics={"calendars": [{"id": "big", "path": str(ics), "interval_seconds": 3600}], "batch_size": BATCH},
        sync={"run_budget_seconds": 3600},  # convergence is under test, not the budget of a loaded machine
    ) as dep:
        seen_run = 0
        cut_at: list[int] = []
        for target in targets:
            worker = dep.worker()  # leads at once and starts the calendar's sync (run_at_start)
            run = await _wait_run(dep, worker, after=seen_run)
            seen_run = run[0]
            if target:  # inside the batch after the target; on a slow machine, at most CAP seconds in
                await _wait_run(dep, worker, after=seen_run - 1, batches=target, timeout=CAP, or_timeout=True)
            else:  # while the file is parsed
                await asyncio.sleep(rng.uniform(0.0, 1.0))
            worker.kill()
            (last,) = await dep.query(LAST_RUN)
            assert last[0] == seen_run and last[1] == "running", f"the sync ended before the kill: {last}"
            cut_at.append(last[2])
        worker = dep.worker()
        await _wait_run(dep, worker, after=seen_run)
        deadline = time.monotonic() + 900
        while (await dep.query(LAST_RUN))[0][1] == "running":
            assert time.monotonic() < deadline, worker.output()
            assert worker.alive(), worker.output()
            await asyncio.sleep(0.2)
        worker.stop()

        runs = await dep.query("SELECT status, error FROM sync_runs WHERE calendar_id = 'big' ORDER BY id")
        assert [s for s, _ in runs] == ["error"] * KILLS + ["ok"], runs
        assert all("interrupted" in e for _, e in runs[:-1])
        stored = await dep.query(
            "SELECT uid, recurrence_id, count(*) FROM events WHERE calendar_id = 'big' GROUP BY uid, recurrence_id"
        )
        assert [k for k in stored if k[2] != 1] == []  # no duplicates
        assert sorted(uid for uid, _, _ in stored) == uids  # exactly the source's entries
        verified = run_cli("audit", "verify", config=dep.config, timeout=300)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    print(
        f"\nsync kill test [{database.backend}]: {n} events, killed with {cut_at} batches stored,"
        f" {time.monotonic() - started:.1f}s"
    )


async def _wait_run(
    dep, worker, *, after: int, batches: int = 0, timeout: float = 300, or_timeout: bool = False
) -> tuple | None:
    """The calendar's sync run the worker started (newer than run ``after``), once it stored ``batches``;
    with ``or_timeout``, None after ``timeout`` instead of failing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.alive(), worker.output()
        rows = await dep.query(LAST_RUN)
        if rows and rows[0][0] > after and rows[0][2] >= batches:
            return rows[0]
        await asyncio.sleep(0.02)
    if or_timeout:
        return None
    raise AssertionError(f"no sync run started within {timeout:g}s:\n{worker.output()}")
