"""A sync killed between batches (SIGKILL: no cleanup at all) and run again
converges to exactly the source's content: nothing duplicated, nothing skipped,
nothing deleted by the run that died."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from chronos.db.engine import Database
from kernel_support import CHRONOS, ROOT, clean_env, db_config, run_cli, write_config

N = 1500
BATCH = 25
LAST_RUN = "SELECT batches, status FROM sync_runs WHERE calendar_id = 'big' ORDER BY id DESC LIMIT 1"


def calendar(uids: list[str], title: str) -> str:
    start = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0) + timedelta(days=1)
    events = []
    for i, uid in enumerate(uids):
        at = start + timedelta(days=i % 60, minutes=15 * (i % 20))
        events.append(
            "BEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTART:{at:%Y%m%dT%H%M%SZ}\r\nDTEND:{at + timedelta(minutes=30):%Y%m%dT%H%M%SZ}\r\n"
            f"SUMMARY:{title} {uid}\r\nEND:VEVENT\r\n"
        )
    return "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//crash test//EN\r\n" + "".join(events) + "END:VCALENDAR\r\n"


async def query(database, sql: str) -> list[tuple]:
    db = Database(database.url, schema=database.schema)
    try:
        async with db.read() as s:
            return [tuple(r) for r in (await s.execute(text(sql))).all()]
    finally:
        await db.dispose()


async def test_a_killed_sync_resumes_to_exactly_the_source(database, tmp_path):
    ics = tmp_path / "big.ics"
    old = [f"old-{i}" for i in range(20)]
    ics.write_text(calendar(old, "First"), encoding="utf-8")
    cfg = write_config(
        tmp_path / "c.yaml",
        db_config(
            database,
            plugins={"enabled": ["events", "ics", "normalize"]},
            ics={
                "calendars": [{"id": "big", "path": str(ics), "interval_seconds": 0}],
                "batch_size": BATCH,
                "parse_workers": 0,
            },
        ),
    )
    first = run_cli("sync", "--json", config=cfg, timeout=120)
    assert first.returncode == 0, first.stderr

    # The next version of the calendar: many new entries, half the old ones gone, the rest renamed.
    new = [f"new-{i}" for i in range(N)]
    wanted = sorted(new + old[:10])
    ics.write_text(calendar(new + old[:10], "Second"), encoding="utf-8")

    proc = subprocess.Popen(
        [CHRONOS, "sync", "--config", str(cfg)],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = await query(database, LAST_RUN)
            if rows and rows[0][1] == "running" and rows[0][0] >= 3:
                break
            assert proc.poll() is None, f"the sync ended before it could be killed: {proc.stderr.read()!r}"
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the sync never reached its third batch")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()

    # The dead run committed whole batches only and deleted nothing.
    stored = await query(database, "SELECT uid, title FROM events WHERE calendar_id = 'big'")
    uids = [u for u, _ in stored]
    assert len(uids) == len(set(uids))
    assert set(old) <= set(uids), "entries were deleted before the listing was complete"
    assert 0 < len([u for u in uids if u.startswith("new-")]) < N
    assert [status for _, status in await query(database, LAST_RUN)] == ["running"]

    again = run_cli("sync", "--json", config=cfg, timeout=180)
    assert again.returncode == 0, again.stderr
    stored = await query(database, "SELECT uid, title FROM events WHERE calendar_id = 'big' ORDER BY uid")
    assert sorted(u for u, _ in stored) == wanted  # exactly the source: no duplicate, none skipped
    assert all(title == f"Second {uid}" for uid, title in stored)
    runs = await query(database, "SELECT status, error FROM sync_runs WHERE calendar_id = 'big' ORDER BY id")
    assert [r[0] for r in runs] == ["ok", "error", "ok"]
    assert "interrupted" in runs[1][1]
