"""Sync benchmark: the whole pipeline next to a raw floor, on one ICS file.

    python bench/events_sync.py [N=100000] [--plugins events,normalize,ics [--add a,b]] [--rounds R] [--keep DIR]

By default the pipeline loads the plugin set the service ships with: every
installed builtin, minus what ``config/demo.yaml`` disables (contrib plugins
are opt-in and left out). ``--plugins a,b,c`` starts from that set instead and
adds the other default plugins one at a time (commands first, then by name),
one row each, so that the cost of every plugin is visible (``--add a,b``: only
those one at a time, the rest of the default set together in a last row).

(a) full sync of N events from an ICS file through the pipeline (ics source →
    normalize → enrichers → events store → sinks, SQLite) next to a floor that
    parses the same file with icalendar in one process and inserts the rows
    raw with sqlite3 into the same schema (the events plugin's migrated
    tables, FTS triggers included); one row per plugin set, then the default
    set on a calendar where 1 % of the entries are ``ACTION:`` commands the
    whitelist accepts (those in the past are consumed at once, the future ones
    are scheduled and keep their entries);
(b) with the default set, re-sync with nothing changed: the normal path (the
    file's cursor says "not modified") and a forced full re-sync (every entry
    parsed, hashed and found unchanged: no row written), next to a raw upsert
    of every row;
(c) peak RSS of each side (the pipeline's parser processes separately).

Each side runs in its own subprocess so that RSS is its own. ``--rounds R``
repeats every measurement R times in turn and keeps each row's best round (a
shared machine's other load only ever slows a run down). Prints tables;
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


#: The whitelist entry the ACTION: entries of the 1 % calendar name (as in config/demo.yaml).
ACTION_RULE = {
    "system": "web-1",
    "action": "DEPLOY",
    "params": {"version": "[0-9][0-9.]{0,19}"},
    "schedule": "event_start",
}
ACTION_EVERY = 100  # one entry in ACTION_EVERY is an ACTION:


def _settings(db: Path, ics: Path, plugins: list[str] | None = None):
    from chronos.settings import load_settings

    extra = {}
    if plugins is not None and "commands" in plugins:
        extra["commands"] = {"whitelist": [ACTION_RULE]}
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
        **extra,
    )


def default_plugins() -> list[str]:
    """The plugins the service loads as shipped: every installed one that is not contrib,
    minus ``plugins.disabled`` of config/demo.yaml."""
    import importlib.util

    import yaml

    from chronos.host import installed_plugins

    demo = yaml.safe_load((HERE.parent / "config" / "demo.yaml").read_text()) or {}
    disabled = set((demo.get("plugins") or {}).get("disabled") or [])
    out = []
    for name, ep in installed_plugins().items():
        if name in disabled:
            continue
        spec = importlib.util.find_spec(ep.module.split(":")[0].split(".")[0])
        origin = str(spec.origin) if spec is not None else ""
        if "/plugins_contrib/" in origin:
            continue
        out.append(name)
    return out


def write_action_ics(path: Path, n: int, seed: int = 1) -> Path:
    """The events of ``write_ics(path, n, seed)`` with every ACTION_EVERY-th title an ``ACTION:``."""
    from gen_events import event_to_vevent, iter_events

    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Chronos Engine//bench//EN\r\nCALSCALE:GREGORIAN\r\n")
        for i, event in enumerate(iter_events(n, seed)):
            if i % ACTION_EVERY == 0:
                event["title"] = f"ACTION: DEPLOY web-1 version=1.{i}"
            fh.write(event_to_vevent(event))
        fh.write("END:VCALENDAR\r\n")
    return path


# -- the pipeline side ---------------------------------------------------------------------


async def _pipeline(db: Path, ics: Path, plugins: list[str], resync: bool) -> dict:
    from sqlalchemy import text

    from chronos.app import create_app
    from chronos.db.sync_models import SyncRun
    from chronos.testing import running_app

    app = create_app(_settings(db, ics, plugins), plugins=plugins, run_jobs=False, env={})
    out: dict = {}
    async with running_app(app):
        failed = sorted(n for n, info in app.state.runtime.host.infos.items() if info.status == "failed")
        if failed:
            raise SystemExit(f"plugins failed to load: {', '.join(failed)}")
        pipe = app.state.runtime.pipeline
        runs = (("full", {}), ("unchanged", {}), ("forced", {"full": True})) if resync else (("full", {}),)
        for label, kw in runs:
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
        if "commands" in plugins:
            async with app.state.chronos.db.read() as s:
                rows = await s.execute(text("SELECT status, entry_kept, count(*) FROM external_commands GROUP BY 1, 2"))
                out["commands"] = {f"{status}, entry {'kept' if kept else 'consumed'}": n for status, kept, n in rows}
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


def _child(part: str, db: Path, ics: Path, plugins: list[str] | None = None, resync: bool = False) -> dict:
    for suffix in ("", "-wal", "-shm", ".audit-key"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--part", part, str(db), str(ics), ",".join(plugins or []), str(int(resync))]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if res.returncode != 0:
        raise SystemExit(f"{part} failed:\n{res.stderr[-4000:]}")
    print(f"  {part} {','.join(plugins or [])}: {time.perf_counter() - t:.0f}s", file=sys.stderr)
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


def _best(runs: list[dict]) -> dict:
    """The run with the fastest full sync; each re-sync measurement at its best too."""
    out = dict(min(runs, key=lambda r: r["full"]["seconds"]))
    for label in ("unchanged", "forced"):
        if label in out:
            out[label] = min((r[label] for r in runs), key=lambda m: m["seconds"])
    return out


def _best_floor(runs: list[dict]) -> dict:
    out = dict(min(runs, key=lambda r: r["parse_seconds"] + r["insert_seconds"]))
    out["upsert_seconds"] = min(r["upsert_seconds"] for r in runs)
    return out


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(f"{h:{w}}" for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(f"{c:{w}}" for c, w in zip(r, widths, strict=True)).rstrip())


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--part"]:
        part, db, ics = args[1], Path(args[2]), Path(args[3])
        if part == "floor":
            result = _floor(db, ics)
        else:
            result = asyncio.run(_pipeline(db, ics, [p for p in args[4].split(",") if p], args[5] == "1"))
        print(json.dumps(result))
        return
    keep = None
    if "--keep" in args:
        i = args.index("--keep")
        keep = Path(args[i + 1])
        del args[i : i + 2]
    defaults = default_plugins()
    sets: list[list[str]] = [defaults]
    labels = ["default set"]
    if "--plugins" in args:
        i = args.index("--plugins")
        start = [p for p in args[i + 1].split(",") if p]
        del args[i : i + 2]
        rest = sorted((p for p in defaults if p not in start), key=lambda p: (p != "commands", p))
        if "--add" in args:
            # Only these are added one at a time; the other default plugins come together in the last row.
            j = args.index("--add")
            rest = [p for p in args[j + 1].split(",") if p in rest]
            del args[j : j + 2]
        sets = [start + rest[:k] for k in range(len(rest) + 1)]
        labels = [",".join(start)] + [f"+ {p}" for p in rest]
        if sorted(sets[-1]) != sorted(defaults):
            sets.append(defaults)
            labels.append("+ " + ", ".join(p for p in defaults if p not in sets[-2]))
        sets[-1] = defaults  # the same set, in the order the default set loads it
    n_rounds = 1
    if "--rounds" in args:
        i = args.index("--rounds")
        n_rounds = int(args[i + 1])
        del args[i : i + 2]
    n = int(args[0]) if args else 100_000
    from gen_events import write_ics

    with tempfile.TemporaryDirectory() as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ics = work / f"events-{n}.ics"
        actions_ics = work / f"events-{n}-actions.ics"
        t = time.perf_counter()
        if not ics.exists():
            write_ics(ics, n)
        if not actions_ics.exists():
            write_action_ics(actions_ics, n)
        print(
            f"generated {ics} ({ics.stat().st_size / 1e6:.1f} MB, {n} events) in {time.perf_counter() - t:.1f}s",
            file=sys.stderr,
        )
        # Rounds run every measurement once in turn; each row keeps its best round (the one the
        # machine's other load disturbed least).
        # Every other round runs the plugin sets in reverse order, so that no row always goes first.
        rounds: list[tuple[dict, list[dict], dict]] = []
        for r in range(max(1, n_rounds)):
            order = list(range(len(sets)))[:: -1 if r % 2 else 1]
            floor_run = _child("floor", work / "floor.db", ics)
            by_set = {
                k: _child("pipeline", work / "pipeline.db", ics, sets[k], resync=sets[k] == defaults) for k in order
            }
            actions_run = _child("pipeline", work / "pipeline.db", actions_ics, defaults)
            rounds.append((floor_run, [by_set[k] for k in range(len(sets))], actions_run))
    floor = _best_floor([r[0] for r in rounds])
    results = [_best([r[1][k] for r in rounds]) for k in range(len(sets))]
    with_actions = _best([r[2] for r in rounds])

    floor_full = floor["parse_seconds"] + floor["insert_seconds"]
    floor_resync = floor["parse_seconds"] + floor["upsert_seconds"]
    assert floor["rows"] == n, floor
    for pipe in results:
        assert pipe["full"]["added"] == n and pipe["full"]["failed"] == 0, pipe
    assert with_actions["full"]["failed"] == 0, with_actions
    base = results[0]["full"]["seconds"]

    def row(label: str, plugins: list[str], pipe: dict, note: str = "") -> tuple[str, ...]:
        full = pipe["full"]["seconds"]
        extra = f"{(full / base - 1) * 100:+.0f} %" if pipe is not results[0] else ""
        return (label, str(len(plugins)), f"{full:.1f} s", f"{n / full:,.0f}", f"{floor_full / full:.2f}x", extra, note)

    rows = []
    for k, (plugins, pipe) in enumerate(zip(sets, results, strict=True)):
        rows.append(row(labels[k], plugins, pipe, "= the default set" if plugins == defaults and k else ""))
    counts = ", ".join(f"{v:,} {k}" for k, v in sorted(with_actions.get("commands", {}).items()))
    rows.append(row(f"default set, 1 in {ACTION_EVERY} an ACTION:", defaults, with_actions, counts))

    print(f"\nSync benchmark, {n:,} events, SQLite, best of {n_rounds} round(s). Machine: {_machine()}")
    print(f"Default set ({len(defaults)} plugins): {', '.join(defaults)}\n")
    print(
        f"(a) full sync; floor (icalendar + sqlite3): {floor_full:.1f} s ({n / floor_full:,.0f} ev/s), "
        f"parse {floor['parse_seconds']:.1f} + insert {floor['insert_seconds']:.1f}\n"
    )
    _table(("plugins", "#", "chronos", "ev/s", "floor/chronos", "vs first row", ""), rows)
    full = next(p for p, s in zip(results, sets, strict=True) if s == defaults)
    print("\n(b), (c) the default set\n")
    _table(
        ("", "chronos pipeline", "floor (icalendar + sqlite3)", "floor/chronos"),
        [
            (
                "(b) re-sync, unchanged file",
                f"{full['unchanged']['seconds'] * 1000:.0f} ms  (not modified)",
                f"{floor['upsert_seconds']:.1f} s  raw upsert",
                f"{floor['upsert_seconds'] / full['unchanged']['seconds']:,.0f}x",
            ),
            (
                "(b) forced re-sync, all hashed",
                f"{full['forced']['seconds']:.1f} s  ({full['forced']['unchanged']:,} unchanged, 0 writes)",
                f"{floor_resync:.1f} s  parse + raw upsert",
                f"{floor_resync / full['forced']['seconds']:.2f}x",
            ),
            (
                "(c) peak RSS",
                f"{full['rss_mb']:.0f} MB  (+ {full['workers']} parser processes, "
                f"{full['workers_rss_mb']:.0f} MB each at most)",
                f"{floor['rss_mb']:.0f} MB",
                "",
            ),
        ],
    )
    print("\n(ratios above 1.00x: chronos is faster)")


if __name__ == "__main__":
    main()
