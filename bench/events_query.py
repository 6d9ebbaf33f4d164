"""Benchmark of the event store and query API (issue "Events", parts (c) and (d)).

1. Loads N synthetic events (``bench/gen_events.py``) into a SQLite file
   through the events plugin's store, in bulk batches (skipped when the file
   already holds them; ``--fresh`` reloads).
2. Query mix, server-side: the code path of ``GET /api/v1/events`` without
   HTTP (build SQL, run it through SQLAlchemy + aiosqlite, rows → JSON bytes),
   p50/p95 per class next to the same SQL run raw with the stdlib ``sqlite3``
   (execute + fetchall).
3. HTTP requests/s through a real uvicorn (``chronos`` app, events plugin,
   API key auth) next to a floor app (Starlette + sqlite3 + json answering the
   same query) with the same worker count, and Datasette on the same file when
   the ``datasette`` command is installed (optional; the column is skipped
   otherwise).
4. Peak RSS of the loader and of each server.

Prints one table. Not a test: numbers depend on the machine.

    .venv/bin/python bench/events_query.py                   # 1M events
    .venv/bin/python bench/events_query.py --events 100000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_events import EPOCH, iter_events  # noqa: E402

SEED = 1
CALENDARS = 20
YEARS = 3
SOURCE = "bench"


# -- loading --------------------------------------------------------------------------------


def settings_for(db: Path) -> Any:
    from chronos.settings import load_settings

    return load_settings(
        path=None,
        env={},
        database={"url": f"sqlite+aiosqlite:///{db}"},
        logging={"level": "warning"},
        scheduler={"enabled": False},
    )


def canonical(item: dict[str, Any]) -> Any:
    from chronos.plugin import CanonicalEvent

    extra: dict[str, Any] = {}
    if item["all_day"]:
        extra = {"start_date": item["start"].date(), "end_date": item["end"].date()}
    return CanonicalEvent(
        source=SOURCE,
        calendar_id=item["calendar_id"],
        uid=item["uid"],
        title=item["title"],
        description=item["description"],
        location=item["location"],
        start_utc=item["start"],
        end_utc=item["end"],
        all_day=item["all_day"],
        tags=item["tags"],
        **extra,
    )


async def load(db: Path, n: int, batch: int) -> dict[str, Any]:
    """Migrate and bulk-load ``n`` events through the store; returns timings."""
    from chronos.app import create_app
    from chronos.plugin import EventStore
    from chronos.testing import running_app

    app = create_app(settings_for(db), plugins=["events"], run_jobs=False, env={})
    async with running_app(app):
        ctx = app.state.chronos
        store = ctx.service(EventStore)
        started = time.perf_counter()
        in_store = 0.0
        pending: list[Any] = []
        done = 0

        async def flush() -> float:
            t = time.perf_counter()
            async with ctx.db.write() as s:
                await store.apply(s, pending, [])
            return time.perf_counter() - t

        for item in iter_events(n, seed=SEED, calendars=CALENDARS, years=YEARS):
            pending.append(canonical(item))
            if len(pending) >= batch:
                in_store += await flush()
                done += len(pending)
                pending = []
                if done % 100_000 == 0:
                    rate = done / (time.perf_counter() - started)
                    print(f"  loaded {done:>9,} events ({rate:,.0f}/s overall)", file=sys.stderr)
        if pending:
            in_store += await flush()
        elapsed = time.perf_counter() - started
        async with ctx.db.write() as s:
            from sqlalchemy import text

            await s.execute(text("ANALYZE"))
    return {"seconds": elapsed, "rate": n / elapsed, "store_seconds": in_store, "store_rate": n / in_store}


def stored_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM events WHERE source = ?", (SOURCE,)).fetchone()[0]
    except sqlite3.Error:
        return 0


# -- the query mix ----------------------------------------------------------------------------


def query_mix(rng: random.Random, count: int) -> dict[str, list[dict[str, Any]]]:
    """Parameters for each query class (the same list serves every contender)."""
    span_days = YEARS * 365

    def day(margin: int = 30) -> datetime:
        return EPOCH + timedelta(days=rng.randrange(margin, span_days - margin))

    mix: dict[str, list[dict[str, Any]]] = {
        "7d one calendar": [],
        "1d all calendars": [],
        "text rare, 30d": [],
        "text common, 30d": [],
        "deep page (20th)": [],
    }
    for _ in range(count):
        d = day()
        mix["7d one calendar"].append(
            {"from": d, "to": d + timedelta(days=7), "calendar_id": [f"cal-{rng.randrange(1, 21):02d}"]}
        )
        d = day()
        mix["1d all calendars"].append({"from": d, "to": d + timedelta(days=1)})
        d = day()
        mix["text rare, 30d"].append(
            {"from": d, "to": d + timedelta(days=30), "text": rng.choice(["firmware", "wanda", "tournament", "kotlin"])}
        )
        d = day()
        mix["text common, 30d"].append(
            {"from": d, "to": d + timedelta(days=30), "text": rng.choice(["meeting", "team", "review"])}
        )
        d = day()
        mix["deep page (20th)"].append({"from": d, "to": d + timedelta(days=90), "page": 20})
    return mix


def make_query(params: dict[str, Any], cursor: str | None = None) -> Any:
    from chronos_events.query import EventQuery

    return EventQuery(
        start=params["from"],
        end=params["to"],
        calendars=params.get("calendar_id", []),
        text=params.get("text"),
        limit=50,
        cursor=cursor,
    )


async def resolve_deep_cursors(session: Any, mix: dict[str, list[dict[str, Any]]]) -> None:
    """Walk 19 pages once so the 20th page's cursor is known (what a client holds)."""
    from chronos_events.query import list_events

    for params in mix["deep page (20th)"]:
        cursor = None
        for _ in range(params["page"] - 1):
            body = await list_events(session, "sqlite", make_query(params, cursor))
            cursor = body["next_cursor"]
            if cursor is None:
                break
        params["cursor"] = cursor


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


async def server_side(db: Path, mix: dict[str, list[dict[str, Any]]], rounds: int) -> dict[str, dict[str, float]]:
    """p50/p95 (ms) of the API's query path and of the same SQL in raw sqlite3."""
    from chronos.db.engine import Database

    from chronos_events.query import InlineReader, QueryBuilder, list_page_sqlite

    database = Database(f"sqlite+aiosqlite:///{db}")
    inline = InlineReader(str(db))
    raw = sqlite3.connect(db)
    builder = QueryBuilder("sqlite")
    out: dict[str, dict[str, float]] = {}
    try:
        async with database.read() as s:
            await resolve_deep_cursors(s, mix)
        for name, cases in mix.items():
            for params in cases:  # warm every contender's page cache alike
                compiled = builder.page(make_query(params, params.get("cursor")), json_items=True)
                raw.execute(compiled.sql, compiled.params).fetchall()
                await list_page_sqlite(database.reader, make_query(params, params.get("cursor")), inline)
            ours: list[float] = []
            plain: list[float] = []
            columns: list[float] = []
            for _ in range(rounds):
                for params in cases:
                    # What GET /api/v1/events runs after auth and parsing: the SQL on the
                    # inline reader (or the thread pool past its budget), the body bytes.
                    q = make_query(params, params.get("cursor"))
                    t = time.perf_counter()
                    await list_page_sqlite(database.reader, q, inline)
                    ours.append(time.perf_counter() - t)
                    # The same statement in raw sqlite3 (SQLite builds the item JSON) ...
                    compiled = builder.page(make_query(params, params.get("cursor")), json_items=True)
                    t = time.perf_counter()
                    raw.execute(compiled.sql, compiled.params).fetchall()
                    plain.append(time.perf_counter() - t)
                    # ... and with the plain column list, for reference.
                    compiled = builder.page(make_query(params, params.get("cursor")))
                    t = time.perf_counter()
                    raw.execute(compiled.sql, compiled.params).fetchall()
                    columns.append(time.perf_counter() - t)
            out[name] = {
                "p50": pct(ours, 50) * 1000,
                "p95": pct(ours, 95) * 1000,
                "raw_p50": pct(plain, 50) * 1000,
                "raw_p95": pct(plain, 95) * 1000,
                "cols_p50": pct(columns, 50) * 1000,
            }
    finally:
        raw.close()
        inline.close()
        await database.dispose()
    return out


# -- HTTP ----------------------------------------------------------------------------------------

FLOOR_APP = '''
"""Floor: the least a server must do to answer the same query (Starlette + sqlite3 + json)."""
import json, os, sqlite3
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

DB = os.environ["FLOOR_DB"]
SQL = json.loads(os.environ["FLOOR_SQL"])
conn = sqlite3.connect(DB, check_same_thread=False)
COLS = [c.strip() for c in SQL["columns"].split(",")]

async def events(request):
    qp = request.query_params
    params = {"lower": qp["lower"], "upper": qp["upper"], "limit": 51}
    if "cal" in qp:
        params["cal0"] = qp["cal"]
        sql = SQL["one"]
    else:
        sql = SQL["all"]
    rows = conn.execute(sql, params).fetchall()
    items = [dict(zip(COLS, r)) for r in rows[:50]]
    return Response(json.dumps({"items": items}), media_type="application/json")

app = Starlette(routes=[Route("/events", events)])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process and its children (uvicorn workers), in MB."""
    total = 0.0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(c) for c in children]
    except FileNotFoundError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


async def wait_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as c:
        while time.monotonic() < deadline:
            try:
                await c.get(url)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


WRK_SCRIPT = """
paths = {%s}
%s
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""


def wrk_run(urls: list[str], headers: dict[str, str], concurrency: int, seconds: float) -> tuple[float, int]:
    """Requests/s measured by wrk (a C load generator: the client is not the bottleneck)."""
    base = httpx.URL(urls[0])
    paths = [httpx.URL(u).raw_path.decode() for u in urls]
    lua_paths = ", ".join(json.dumps(p) for p in paths)
    lua_headers = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT % (lua_paths, lua_headers))
        script = fh.name
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{seconds:g}s",
                "-s",
                script,
                f"{base.scheme}://{base.host}:{base.port}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script)
    rate = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec:")))
    errors = sum(int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line)
    return rate, errors


async def hammer(urls: list[str], headers: dict[str, str], concurrency: int, seconds: float) -> tuple[float, int]:
    """Requests/s over ``seconds`` with ``concurrency`` connections cycling through ``urls``.

    Uses wrk when installed (``apt-get install wrk``); otherwise an httpx
    client, which on a small machine may saturate before the servers do.
    """
    if shutil.which("wrk"):
        return await asyncio.to_thread(wrk_run, urls, headers, concurrency, seconds)
    done = 0
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as c:

        async def worker(offset: int) -> None:
            nonlocal done, errors
            i = offset
            while time.perf_counter() < stop:
                r = await c.get(urls[i % len(urls)])
                if r.status_code != 200:
                    errors += 1
                done += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    return done / elapsed, errors


def start_server(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


async def http_bench(
    db: Path, mix: dict[str, list[dict[str, Any]]], workers: int, concurrency: int, seconds: float, rounds: int
) -> dict[str, Any]:
    """Requests/s of every contender per query class: the servers run side by
    side and are measured in interleaved rounds (chronos, floor, datasette,
    chronos, …); the median round counts, so a burst of other load on the
    machine hits every contender alike."""
    from chronos_events.query import COLUMNS, EventQuery, QueryBuilder, sqlite_time

    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="chronos-bench-"))
    classes = ["7d one calendar", "1d all calendars"]
    procs: dict[str, subprocess.Popen] = {}
    urls: dict[str, dict[str, list[str]]] = {}
    headers: dict[str, dict[str, str]] = {}

    # chronos: the shipped app (every setting at its default), one key
    secret = await make_key(db)
    cfg = work / "chronos.yaml"
    cfg.write_text(
        f"database:\n  url: sqlite+aiosqlite:///{db}\n  pool_size: 8\nlogging:\n  level: warning\n"
        "scheduler:\n  enabled: false\nplugins:\n  enabled: [events]\n"
    )
    (work / "serve_chronos.py").write_text(
        "import os\nfrom chronos.app import create_app\nfrom chronos.settings import load_settings\n"
        "app = create_app(load_settings(path=os.environ['CHRONOS_CONFIG']), run_jobs=False)\n"
    )
    port = free_port()
    procs["chronos"] = start_server(
        [
            py,
            "-m",
            "uvicorn",
            "serve_chronos:app",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        {**os.environ, "CHRONOS_CONFIG": str(cfg)},
        work,
    )
    headers["chronos"] = {"Authorization": f"Bearer {secret}"}
    urls["chronos"] = {}
    for name in classes:
        urls["chronos"][name] = []
        for p in mix[name]:
            qs = {"from": p["from"].isoformat(), "to": p["to"].isoformat(), "limit": 50}
            if p.get("calendar_id"):
                qs["calendar_id"] = p["calendar_id"][0]
            urls["chronos"][name].append(str(httpx.URL(f"http://127.0.0.1:{port}/api/v1/events", params=qs)))

    # the floor: Starlette + sqlite3 + json answering the same SQL
    builder = QueryBuilder("sqlite")
    probe = datetime(2026, 1, 1, tzinfo=UTC)
    sql_one = builder.page(EventQuery(start=probe, end=probe, calendars=["x"], limit=50)).sql
    sql_all = builder.page(EventQuery(start=probe, end=probe, limit=50)).sql
    (work / "floor_app.py").write_text(FLOOR_APP)
    port = free_port()
    floor_env = {
        **os.environ,
        "FLOOR_DB": str(db),
        "FLOOR_SQL": json.dumps({"one": sql_one, "all": sql_all, "columns": COLUMNS}),
    }
    procs["floor"] = start_server(
        [
            py,
            "-m",
            "uvicorn",
            "floor_app:app",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        floor_env,
        work,
    )
    headers["floor"] = {}
    urls["floor"] = {}
    for name in classes:
        urls["floor"][name] = []
        for p in mix[name]:
            qs = {"lower": sqlite_time(p["from"]), "upper": sqlite_time(p["to"])}
            if p.get("calendar_id"):
                qs["cal"] = p["calendar_id"][0]
            urls["floor"][name].append(str(httpx.URL(f"http://127.0.0.1:{port}/events", params=qs)))

    # Datasette, when installed
    datasette = shutil.which("datasette") or os.environ.get("DATASETTE")
    if datasette:
        port = free_port()
        procs["datasette"] = start_server(
            [
                datasette,
                "serve",
                str(db),
                "--port",
                str(port),
                "--setting",
                "sql_time_limit_ms",
                "10000",
                "--setting",
                "num_sql_threads",
                "3",
            ],
            dict(os.environ),
            work,
        )
        headers["datasette"] = {}
        urls["datasette"] = {}
        for name in classes:
            urls["datasette"][name] = []
            for p in mix[name]:
                sql = sql_one if p.get("calendar_id") else sql_all
                qs = {
                    "sql": sql,
                    "lower": sqlite_time(p["from"]),
                    "upper": sqlite_time(p["to"]),
                    "limit": "51",
                    "_shape": "array",
                }
                if p.get("calendar_id"):
                    qs["cal0"] = p["calendar_id"][0]
                urls["datasette"][name].append(str(httpx.URL(f"http://127.0.0.1:{port}/{db.stem}.json", params=qs)))

    health = {"chronos": "/health", "floor": "/", "datasette": "/-/versions.json"}
    samples: dict[str, dict[str, list[tuple[float, int]]]] = {c: {n: [] for n in classes} for c in procs}
    results: dict[str, Any] = {c: {} for c in ("chronos", "floor", "datasette")}
    results["rss"] = {}
    try:
        for contender in procs:
            first = urls[contender][classes[0]][0]
            await wait_up(str(httpx.URL(first).copy_with(raw_path=health[contender].encode(), query=None)))
            r = httpx.get(first, headers=headers[contender])
            assert r.status_code == 200, (contender, r.text)
            for name in classes:  # warm up: page cache, lazily built state
                await hammer(urls[contender][name], headers[contender], concurrency, 1.0)
        for _round in range(rounds):
            for name in classes:
                for contender in procs:
                    samples[contender][name].append(
                        await hammer(urls[contender][name], headers[contender], concurrency, seconds)
                    )
        for contender in procs:
            for name in classes:
                rates = sorted(rate for rate, _ in samples[contender][name])
                results[contender][name] = (rates[len(rates) // 2], sum(e for _, e in samples[contender][name]))
            results["rss"][f"{contender} server"] = peak_rss_mb(procs[contender].pid)
    finally:
        for proc in procs.values():
            stop_server(proc)
        shutil.rmtree(work, ignore_errors=True)
    return results


async def make_key(db: Path) -> str:
    from chronos.app import create_app
    from chronos.testing import create_test_key, running_app

    app = create_app(settings_for(db), plugins=["events"], run_jobs=False, env={})
    async with running_app(app):
        return await create_test_key(app, ["events.read"], name="bench")


# -- report -----------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version},"
        f" {platform.system()} {platform.release()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, default=None, help="SQLite file (default: bench/out/events-<N>.db)")
    ap.add_argument("--fresh", action="store_true", help="reload even if the file holds the events")
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--cases", type=int, default=40, help="parameter sets per query class")
    ap.add_argument("--rounds", type=int, default=5, help="server-side repetitions of every case")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0, help="HTTP measurement time per class, contender and round")
    ap.add_argument("--rounds-http", type=int, default=3, help="interleaved HTTP rounds (the median counts)")
    ap.add_argument("--no-http", action="store_true")
    args = ap.parse_args()

    db = args.db or HERE / "out" / f"events-{args.events}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    load_info = None
    if args.fresh or stored_count(db) != args.events:
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        print(f"loading {args.events:,} events into {db} …", file=sys.stderr)
        load_info = asyncio.run(load(db, args.events, args.batch))
    loader_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    mix = query_mix(random.Random(42), args.cases)
    print("server-side query mix …", file=sys.stderr)
    side = asyncio.run(server_side(db, mix, args.rounds))
    http = (
        None
        if args.no_http
        else asyncio.run(http_bench(db, mix, args.workers, args.concurrency, args.seconds, args.rounds_http))
    )

    print()
    print(f"Machine: {machine()}")
    print(
        f"Data: {args.events:,} events, {CALENDARS} calendars, {YEARS} years, file {db.stat().st_size / 2**20:,.0f} MB"
    )
    if load_info:
        print(
            f"Bulk load: {load_info['seconds']:.1f} s in all ({load_info['rate']:,.0f} events/s, including generating"
            f" the events and building CanonicalEvents); EventStore.apply alone {load_info['store_seconds']:.1f} s"
            f" ({load_info['store_rate']:,.0f} events/s, batches of {args.batch})"
        )
    print()
    print(
        "Server-side: the route's path after auth (SQL on the inline reader or a thread, response bytes);"
        " raw: the same SQL in sqlite3, execute + fetchall"
    )
    print(
        f"{'query class':<20} {'p50 ms':>8} {'p95 ms':>8} {'raw p50':>8} {'raw p95':>8} {'ratio p50':>9}"
        f" {'raw p50 plain columns':>22}"
    )
    for name, r in side.items():
        ratio = r["p50"] / r["raw_p50"] if r["raw_p50"] else float("nan")
        print(
            f"{name:<20} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['raw_p50']:>8.2f} {r['raw_p95']:>8.2f} {ratio:>8.2f}x"
            f" {r['cols_p50']:>22.2f}"
        )
    if http:
        print()
        has_ds = bool(http["datasette"])
        head = f"{'HTTP req/s':<20} {'chronos':>9} {'floor':>9} {'share':>7}" + (
            f" {'datasette':>10}" if has_ds else ""
        )
        print(
            head + f"   (uvicorn, {args.workers} worker(s), {args.concurrency} connections, "
            f"{'wrk' if shutil.which('wrk') else 'httpx'} client, median of {args.rounds_http} interleaved rounds"
            f" of {args.seconds:g} s)"
        )
        for name in http["chronos"]:
            ours, err = http["chronos"][name]
            floor, _ = http["floor"][name]
            line = f"{name:<20} {ours:>9,.0f} {floor:>9,.0f} {ours / floor:>6.0%}"
            if has_ds:
                line += f" {http['datasette'][name][0]:>10,.0f}"
            if err:
                line += f"  ({err} errors)"
            print(line)
        if not has_ds:
            print("(Datasette not installed: column skipped)")
    print()
    print(
        "Peak RSS: "
        + ", ".join(
            [f"loader/bench process {loader_rss:,.0f} MB"]
            + [f"{k} {v:,.0f} MB" for k, v in (http or {}).get("rss", {}).items()]
        )
    )


if __name__ == "__main__":
    main()
