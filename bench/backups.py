"""Benchmark of backups and restore (issue "Backups and verified restore").

1. Loads N synthetic events into a SQLite file through the events store
   (``bench/events_query.py``'s loader; skipped when the file holds them).
2. Floor: ``sqlite3 FILE ".backup COPY"`` (the CLI's online backup) while a
   query load runs in the app's process.
3. Chronos: a backup of the same file (snapshot through the online backup API,
   row counts, redacted configuration, hashing, the tar archive) under the same
   load; rounds interleave with the floor's. Query p50/p95 without a backup,
   during the floor's and during chronos's.
4. Restore of that archive into a new file (verify checksums, integrity check,
   row counts, migrate, swap) next to a floor of a plain file copy plus
   ``PRAGMA integrity_check``.

Prints one table. Not a test: numbers depend on the machine.

    .venv/bin/python bench/backups.py                    # 1M events
    .venv/bin/python bench/backups.py --events 100000    # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from events_query import EPOCH, YEARS, load, pct, stored_count  # noqa: E402

QUERY = (
    "SELECT id, uid, title, start_utc, end_utc FROM events WHERE calendar_id = :cal"
    " AND start_utc < :to AND end_utc > :from ORDER BY start_utc, id LIMIT 50"
)


def settings(db: Path, backups: Path) -> Any:
    from chronos.settings import load_settings

    return load_settings(
        path=None,
        env={},
        database={"url": f"sqlite+aiosqlite:///{db}"},
        logging={"level": "warning"},
        scheduler={"enabled": False},
        backups={"directory": str(backups), "schedule": None, "verify_after_backup": False},
    )


async def query_load(ctx: Any, stop: asyncio.Event, workers: int = 4) -> list[float]:
    """7-day window queries of one calendar through the app's read sessions until ``stop``; latencies (ms)."""
    from sqlalchemy import text

    rng = random.Random(7)
    latencies: list[float] = []

    async def worker() -> None:
        while not stop.is_set():
            d = EPOCH + timedelta(days=rng.randrange(30, YEARS * 365 - 30))
            params = {"cal": f"cal-{rng.randrange(1, 21):02d}", "from": d, "to": d + timedelta(days=7)}
            t = time.perf_counter()
            async with ctx.db.read() as s:
                (await s.execute(text(QUERY), params)).all()
            latencies.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return latencies


async def measure(db: Path, out: Path, rounds: int) -> dict[str, Any]:
    from chronos.app import create_app
    from chronos.testing import running_app, runtime_of

    from chronos_backups import service
    from chronos_backups.restore import restore

    backups = out / "backups-archives"
    shutil.rmtree(backups, ignore_errors=True)
    backups.mkdir()
    res: dict[str, Any] = {"db_bytes": db.stat().st_size}

    floor_copy = out / "floor-backup.db"
    app = create_app(settings(db, backups), plugins=["events", "backups"], run_jobs=False, env={})
    res.update(floor_backup=[], chronos_backup=[], p_without=[], p_with=[], p_floor=[])
    async with running_app(app):
        ctx = runtime_of(app).ctx
        # Interleaved rounds: the machine's other load hits both contenders alike.
        for round_no in range(rounds):
            stop = asyncio.Event()  # the query load without a backup, about as long as one takes
            load_task = asyncio.create_task(query_load(ctx, stop))
            await asyncio.sleep(3.0)
            stop.set()
            res["p_without"] += await load_task

            floor_copy.unlink(missing_ok=True)
            stop = asyncio.Event()  # the floor runs under the same query load
            load_task = asyncio.create_task(query_load(ctx, stop))
            await asyncio.sleep(0.5)
            t = time.perf_counter()
            proc = await asyncio.create_subprocess_exec("sqlite3", str(db), f".backup '{floor_copy}'")
            assert await proc.wait() == 0
            res["floor_backup"].append(time.perf_counter() - t)
            stop.set()
            res["p_floor"] += await load_task

            stop = asyncio.Event()
            load_task = asyncio.create_task(query_load(ctx, stop))
            await asyncio.sleep(0.5)
            t = time.perf_counter()
            view = await service.create_backup(ctx, service.new_backup_id())
            res["chronos_backup"].append(time.perf_counter() - t)
            stop.set()
            res["p_with"] += await load_task
            archive = backups / view["file"]
            if round_no < rounds - 1:
                archive.unlink()
            print(
                f"  round {round_no + 1}: sqlite3 .backup {res['floor_backup'][-1]:.2f} s,"
                f" chronos {res['chronos_backup'][-1]:.2f} s",
                file=sys.stderr,
            )
        res["archive_bytes"] = archive.stat().st_size

        t = time.perf_counter()
        check = await service.verify_path(ctx.resource(service.STORE), archive)
        res["verify"] = time.perf_counter() - t
        assert check["ok"], check

    target = out / "restored.db"
    for p in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
        p.unlink(missing_ok=True)
    t = time.perf_counter()
    await restore(ctx, archive, to_url=f"sqlite+aiosqlite:///{target}")
    res["chronos_restore"] = time.perf_counter() - t
    await ctx.db.dispose()

    floor_target = out / "floor-restore.db"
    t = time.perf_counter()
    shutil.copyfile(floor_copy, floor_target)
    conn = sqlite3.connect(floor_target)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    res["floor_restore"] = time.perf_counter() - t
    for p in (floor_copy, floor_target, target):
        p.unlink(missing_ok=True)
    shutil.rmtree(backups, ignore_errors=True)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.out / f"backups-{args.events}.db"
    if stored_count(db) != args.events:
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            p.unlink(missing_ok=True)
        print(f"loading {args.events:,} events into {db} …", file=sys.stderr)
        asyncio.run(load(db, args.events, 5000))
    r = asyncio.run(measure(db, args.out, args.rounds))
    fb, cb = statistics.median(r["floor_backup"]), statistics.median(r["chronos_backup"])
    mb = r["db_bytes"] / 1e6
    without, with_ = r["p_without"], r["p_with"]
    print(
        f"\nBackups of {args.events:,} events ({mb:,.0f} MB SQLite file; archive {r['archive_bytes'] / 1e6:,.0f} MB)\n"
    )
    print("| | chronos | floor | chronos / floor |")
    print("|---|---|---|---|")
    print(
        f"| backup while queries run (median of {args.rounds}) | {cb:.2f} s | {fb:.2f} s (sqlite3 .backup)"
        f" | {cb / fb:.2f}× |"
    )
    print(
        f"| restore (verify, integrity, counts, migrate, swap) | {r['chronos_restore']:.2f} s"
        f" | {r['floor_restore']:.2f} s (copy + integrity_check) | {r['chronos_restore'] / r['floor_restore']:.2f}× |"
    )
    print(f"| verify an archive | {r['verify']:.2f} s | | |")
    print("\n| query load (7-day window, 4 tasks) | p50 | p95 | queries |")
    print("|---|---|---|---|")
    print(f"| without a backup | {pct(without, 50):.2f} ms | {pct(without, 95):.2f} ms | {len(without):,} |")
    floor = r["p_floor"]
    print(f"| during sqlite3 .backup | {pct(floor, 50):.2f} ms | {pct(floor, 95):.2f} ms | {len(floor):,} |")
    print(f"| during the chronos backup | {pct(with_, 50):.2f} ms | {pct(with_, 95):.2f} ms | {len(with_):,} |")
    print(f"\np95 during / without: {pct(with_, 95) / pct(without, 95):.2f}×")


if __name__ == "__main__":
    main()
