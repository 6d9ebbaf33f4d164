"""Sync benchmark: the whole pipeline next to a raw floor, on one ICS file.

    python bench/events_sync.py [N=100000] [--keep DIR]

(a) full sync of N events from an ICS file through the pipeline (ics source →
    normalize → events store, SQLite) next to a floor that parses the same file
    with icalendar in one process and inserts the rows raw with sqlite3 into
    the same schema (the events plugin's migrated tables, FTS triggers
    included);
(b) re-sync with nothing changed: the normal path (the file's cursor says
    "not modified") and a forced full re-sync (every entry parsed, hashed and
    found unchanged: no row written), next to a raw upsert of every row;
(c) peak RSS of each side (the pipeline's parser processes separately).

Each side runs in its own subprocess so that RSS is its own. Prints a table;
nothing here is a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _settings(db: Path, ics: Path):
    from chronos.settings import load_settings

    return load_settings(
        path=None,
        env={},
        database={"url": f"sqlite+aiosqlite:///{db}"},
        logging={"level": "warning"},
        ics={
            "calendars": [
                {"id": "bench", "path": str(ics), "past_days": 3650, "horizon_days": 3650, "interval_seconds": 0}
            ],
            "max_bytes": 1024 * 1024 * 1024,
        },
    )


# -- the pipeline side ---------------------------------------------------------------------


async def _pipeline(db: Path, ics: Path) -> dict:
    from chronos.app import create_app
    from chronos.db.sync_models import SyncRun
    from chronos.testing import running_app

    app = create_app(_settings(db, ics), plugins=["events", "normalize", "ics"], run_jobs=False, env={})
    out: dict = {}
    async with running_app(app):
        pipe = app.state.runtime.pipeline
        for label, kw in (("full", {}), ("unchanged", {}), ("forced", {"full": True})):
            t = time.perf_counter()
            run_id = await pipe.run("ics", "bench", **kw)
            elapsed = time.perf_counter() - t
            async with app.state.chronos.db.read() as s:
                run = await s.get(SyncRun, run_id)
            out[label] = {
                "seconds": elapsed,
                "status": run.status,
                "added": run.added,
                "unchanged": run.unchanged,
                "updated": run.updated,
                "failed": run.failed,
                "not_modified": run.not_modified,
            }
        # Parser processes are children of the forkserver, not of this process: read their peak RSS directly.
        pool = app.state.runtime.pipeline.sources["ics"][1]._pool
        peaks = [_peak_rss_mb(pid) for pid in (getattr(pool, "_processes", None) or {})]
        out["workers"] = len(peaks)
        out["workers_rss_mb"] = max(peaks, default=0.0)
    out["rss_mb"] = _rss_mb(resource.RUSAGE_SELF)
    return out


# -- the floor side --------------------------------------------------------------------------

COLUMNS = (
    "source",
    "calendar_id",
    "uid",
    "recurrence_id",
    "title",
    "description",
    "location",
    "start_utc",
    "end_utc",
    "duration_seconds",
    "all_day",
    "start_date",
    "end_date",
    "timezone",
    "status",
    "transparency",
    "mode",
    "tags",
    "sub_tasks",
    "all_done",
    "metadata",
    "content_hash",
    "source_hash",
    "created_at",
    "updated_at",
)


async def _migrate(db: Path, ics: Path) -> None:
    from chronos.app import create_app
    from chronos.testing import running_app

    async with running_app(create_app(_settings(db, ics), plugins=["events"], run_jobs=False, env={})):
        pass


def _parse_rows(ics: Path) -> list[tuple]:
    import hashlib
    from datetime import UTC, date, datetime

    import icalendar

    cal = icalendar.Calendar.from_ical(ics.read_bytes())
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    rows = []
    for ev in cal.walk("VEVENT"):
        start, end = ev.decoded("DTSTART"), ev.decoded("DTEND")
        all_day = not isinstance(start, datetime)
        if all_day:
            s_utc = datetime.combine(start, datetime.min.time(), UTC)
            e_utc = datetime.combine(end, datetime.min.time(), UTC)
        else:
            s_utc, e_utc = start.astimezone(UTC), end.astimezone(UTC)
        title, desc, loc = str(ev.get("SUMMARY", "")), str(ev.get("DESCRIPTION", "")), str(ev.get("LOCATION", ""))
        cats = ev.get("CATEGORIES")
        tags = [str(c) for c in cats.cats] if cats is not None else []
        h = hashlib.sha256(f"{title}\0{desc}\0{loc}\0{s_utc}\0{e_utc}".encode()).hexdigest()
        rows.append(
            (
                "ics",
                "bench",
                str(ev["UID"]),
                "",
                title,
                desc,
                loc,
                s_utc.strftime("%Y-%m-%d %H:%M:%S.%f"),
                e_utc.strftime("%Y-%m-%d %H:%M:%S.%f"),
                int((e_utc - s_utc).total_seconds()),
                int(all_day),
                start.isoformat() if isinstance(start, date) and all_day else None,
                end.isoformat() if isinstance(end, date) and all_day else None,
                None,
                "confirmed",
                "busy",
                "free",
                json.dumps(tags),
                "[]",
                0,
                "{}",
                h,
                h,
                now,
                now,
            )
        )
    return rows


def _floor(db: Path, ics: Path) -> dict:
    asyncio.run(_migrate(db, ics))
    out: dict = {}
    t = time.perf_counter()
    rows = _parse_rows(ics)
    out["parse_seconds"] = time.perf_counter() - t
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    insert = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    t = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(insert, rows)
    conn.execute("COMMIT")
    out["insert_seconds"] = time.perf_counter() - t
    keys = ("source", "calendar_id", "uid", "recurrence_id")
    upsert = (
        insert
        + f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in keys and c != "created_at")
    )
    t = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(upsert, rows)
    conn.execute("COMMIT")
    out["upsert_seconds"] = time.perf_counter() - t
    out["rows"] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    out["rss_mb"] = _rss_mb(resource.RUSAGE_SELF)
    return out


# -- orchestration -----------------------------------------------------------------------------


def _child(part: str, db: Path, ics: Path) -> dict:
    cmd = [sys.executable, __file__, "--part", part, str(db), str(ics)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if res.returncode != 0:
        raise SystemExit(f"{part} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu or 'unknown CPU'}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--part"]:
        part, db, ics = args[1], Path(args[2]), Path(args[3])
        result = asyncio.run(_pipeline(db, ics)) if part == "pipeline" else _floor(db, ics)
        print(json.dumps(result))
        return
    keep = None
    if "--keep" in args:
        i = args.index("--keep")
        keep = Path(args[i + 1])
        del args[i : i + 2]
    n = int(args[0]) if args else 100_000
    from gen_events import write_ics

    with tempfile.TemporaryDirectory() as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ics = work / f"events-{n}.ics"
        t = time.perf_counter()
        if not ics.exists():
            write_ics(ics, n)
        print(
            f"generated {ics} ({ics.stat().st_size / 1e6:.1f} MB, {n} events) in {time.perf_counter() - t:.1f}s",
            file=sys.stderr,
        )
        for name in ("pipeline.db", "floor.db"):
            for suffix in ("", "-wal", "-shm"):
                (work / (name + suffix)).unlink(missing_ok=True)
        floor = _child("floor", work / "floor.db", ics)
        pipe = _child("pipeline", work / "pipeline.db", ics)

    full = pipe["full"]["seconds"]
    floor_full = floor["parse_seconds"] + floor["insert_seconds"]
    floor_resync = floor["parse_seconds"] + floor["upsert_seconds"]
    assert pipe["full"]["added"] == n == floor["rows"], (pipe, floor)
    rows = [
        (
            "(a) full sync",
            f"{full:.1f} s  ({n / full:,.0f} ev/s)",
            f"{floor_full:.1f} s  ({n / floor_full:,.0f} ev/s)  parse {floor['parse_seconds']:.1f} + insert "
            f"{floor['insert_seconds']:.1f}",
            f"{floor_full / full:.2f}x",
        ),
        (
            "(b) re-sync, unchanged file",
            f"{pipe['unchanged']['seconds'] * 1000:.0f} ms  (not modified)",
            f"{floor['upsert_seconds']:.1f} s  raw upsert",
            f"{floor['upsert_seconds'] / pipe['unchanged']['seconds']:,.0f}x",
        ),
        (
            "(b) forced re-sync, all hashed",
            f"{pipe['forced']['seconds']:.1f} s  ({pipe['forced']['unchanged']:,} unchanged, 0 writes)",
            f"{floor_resync:.1f} s  parse + raw upsert",
            f"{floor_resync / pipe['forced']['seconds']:.2f}x",
        ),
        (
            "(c) peak RSS",
            f"{pipe['rss_mb']:.0f} MB  (+ {pipe['workers']} parser processes, {pipe['workers_rss_mb']:.0f} MB each at most)",
            f"{floor['rss_mb']:.0f} MB",
            "",
        ),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    print(f"\nSync benchmark, {n:,} events, SQLite. Machine: {_machine()}\n")
    print(f"{'':{w0}}  {'chronos pipeline':{w1}}  {'floor (icalendar + sqlite3)':{w2}}  floor/chronos")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * w2}  -------------")
    for r in rows:
        print(f"{r[0]:{w0}}  {r[1]:{w1}}  {r[2]:{w2}}  {r[3]}")
    print("\n(ratios above 1.00x: chronos is faster)")


if __name__ == "__main__":
    main()
