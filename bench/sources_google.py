"""Google source benchmark: the pipeline next to a raw floor, against the local Calendar v3 server.

    python bench/sources_google.py [N=50000]      (BENCH_PAGE_SIZE=… sets google.page_size)

(a) full sync of N events (timed, all-day, recurring instances) through the
    pipeline (google source → normalize → events store, SQLite) next to a floor
    that lists the same calendar with the bare client library
    (googleapiclient, same credentials, same page size) and inserts the rows
    raw with sqlite3 into the events plugin's migrated table;
(b) incremental sync with 10 changes among the N events: HTTP requests made,
    time the server spent answering them, and the run's wall time.

The fake server (plugins_builtin/google/tests/google_support.py) runs in its
own process so it does not share an interpreter lock with either side. Prints
a table; nothing here is a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "plugins_builtin" / "google" / "tests"))

CAL = "bench@group.calendar.google.com"


# -- the server process ------------------------------------------------------------------------


def _events(n: int) -> list[dict]:
    from google_support import all_day, timed, weekly_instances

    today = datetime.now(UTC).date()
    base = datetime.combine(today, datetime.min.time(), UTC)
    out: list[dict] = []
    series = n // 10  # a tenth are instances of weekly series (10 instances each)
    for s in range(series // 10):
        first = datetime.combine(today + timedelta(days=s % 7), datetime.min.time()).replace(hour=8 + s % 9)
        out += weekly_instances(f"series{s:05d}", first, 10, "Europe/Berlin", summary=f"Weekly {s} #team")
    i = 0
    while len(out) < n:
        if i % 20 == 0:
            out.append(all_day(f"day{i:06d}", today + timedelta(days=i % 300), summary=f"Day {i}"))
        else:
            start = base + timedelta(days=i % 360, minutes=15 * (i % 40))
            out.append(
                timed(
                    f"ev{i:06d}",
                    start,
                    30,
                    summary=f"Meeting {i}",
                    tz="Europe/Berlin" if i % 2 else None,
                    description=f"Agenda for meeting {i}\n[ ] notes\n[x] invite",
                    location="Room 1",
                )
            )
        i += 1
    return out


def _serve(n: int, key_file: Path) -> None:
    import threading

    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from google_support import FakeGoogle, build_app, free_port, timed

    fake = FakeGoogle()
    fake.put_many(CAL, _events(n))
    app = build_app(fake)

    async def change(request: Request) -> JSONResponse:
        today = datetime.now(UTC).replace(hour=7, minute=0, second=0, microsecond=0)
        for k in range(5):
            fake.put(CAL, timed(f"ev{k * 97 + 1:06d}", today + timedelta(days=k + 1), summary=f"Moved {k}"))
        for k in range(3):
            fake.put(CAL, timed(f"added{k}", today + timedelta(days=k + 2), summary=f"New {k}"))
        for k in range(2):
            fake.cancel(CAL, f"ev{k * 89 + 3:06d}")
        fake.requests.clear()
        fake.server_seconds.clear()
        return JSONResponse({"changed": 10})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(
            {"lists": len(fake.list_requests()), "server_seconds": sum(fake.server_seconds), "all": len(fake.requests)}
        )

    async def reset(request: Request) -> JSONResponse:
        fake.requests.clear()
        fake.server_seconds.clear()
        return JSONResponse({})

    app.router.routes += [
        Route("/_bench/change", change, methods=["POST"]),
        Route("/_bench/stats", stats),
        Route("/_bench/reset", reset, methods=["POST"]),
    ]
    port = free_port()
    fake.base = f"http://127.0.0.1:{port}"
    fake.service_account_file(key_file.parent)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    print(fake.base, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.should_exit = True
    thread.join(5)


def _call(base: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


# -- the pipeline side -------------------------------------------------------------------------


def _settings(db: Path, base: str, key_file: Path):
    from chronos.settings import load_settings

    return load_settings(
        path=None,
        env={},
        database={"url": f"sqlite+aiosqlite:///{db}"},
        logging={"level": "warning"},
        network={"allow": ["127.0.0.1/32"]},
        google={
            "credentials": {"service_account_file": str(key_file)},
            "api_base_url": base,
            "page_size": int(os.environ.get("BENCH_PAGE_SIZE", "2500")),
            "calendars": [
                {"id": "bench", "calendar_id": CAL, "past_days": 10, "horizon_days": 800, "interval_seconds": 0}
            ],
        },
    )


async def _pipeline(db: Path, base: str, key_file: Path) -> dict:
    from chronos.app import create_app
    from chronos.db.sync_models import SyncRun
    from chronos.testing import running_app

    app = create_app(_settings(db, base, key_file), plugins=["events", "normalize", "google"], run_jobs=False, env={})
    out: dict = {}
    async with running_app(app):
        pipe = app.state.runtime.pipeline
        for label in ("full", "incremental"):
            if label == "incremental":
                _call(base, "/_bench/change", "POST")
            else:
                _call(base, "/_bench/reset", "POST")
            t = time.perf_counter()
            run_id = await pipe.run("google", "bench")
            elapsed = time.perf_counter() - t
            async with app.state.chronos.db.read() as s:
                run = await s.get(SyncRun, run_id)
            out[label] = {
                "seconds": elapsed,
                "status": run.status,
                "error": run.error,
                "added": run.added,
                "updated": run.updated,
                "deleted": run.deleted,
                "failed": run.failed,
                **_call(base, "/_bench/stats"),
            }
    return out


# -- the floor side ----------------------------------------------------------------------------


async def _migrate(db: Path, base: str, key_file: Path) -> None:
    from chronos.app import create_app
    from chronos.testing import running_app

    async with running_app(create_app(_settings(db, base, key_file), plugins=["events"], run_jobs=False, env={})):
        pass


def _floor(db: Path, base: str, key_file: Path) -> dict:
    import hashlib

    import httplib2
    from google.oauth2 import service_account
    from google_auth_httplib2 import AuthorizedHttp
    from googleapiclient import discovery

    from events_sync import COLUMNS

    asyncio.run(_migrate(db, base, key_file))
    _call(base, "/_bench/reset", "POST")
    t0 = time.perf_counter()
    creds = service_account.Credentials.from_service_account_file(
        str(key_file), scopes=["https://www.googleapis.com/auth/calendar.events.readonly"]
    )
    http = AuthorizedHttp(creds, http=httplib2.Http(timeout=60))
    service = discovery.build(
        "calendar", "v3", http=http, static_discovery=True, client_options={"api_endpoint": f"{base}/calendar/v3/"}
    )
    now = datetime.now(UTC)
    params = {
        "calendarId": CAL,
        "singleEvents": True,
        "maxResults": 2500,
        "timeMin": (now - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "timeMax": (now + timedelta(days=800)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    rows: list[tuple] = []
    token = None
    while True:
        body = service.events().list(**params, **({"pageToken": token} if token else {})).execute()
        for ev in body.get("items", []):
            s, e = ev["start"], ev["end"]
            if "date" in s:
                sd, ed = date.fromisoformat(s["date"]), date.fromisoformat(e["date"])
                su = datetime.combine(sd, datetime.min.time(), UTC)
                eu = datetime.combine(ed, datetime.min.time(), UTC)
            else:
                sd = ed = None
                su = datetime.fromisoformat(s["dateTime"]).astimezone(UTC)
                eu = datetime.fromisoformat(e["dateTime"]).astimezone(UTC)
            uid = ev.get("recurringEventId") or ev["id"]
            title, desc = ev.get("summary", ""), ev.get("description", "")
            h = hashlib.sha256(f"{title}\0{desc}\0{su}\0{eu}".encode()).hexdigest()
            rows.append(
                (
                    "google", "bench", uid, "" if uid == ev["id"] else su.strftime("%Y%m%dT%H%M%SZ"),
                    title, desc, ev.get("location", ""),
                    su.strftime("%Y-%m-%d %H:%M:%S.%f"), eu.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    int((eu - su).total_seconds()), int(sd is not None),
                    sd.isoformat() if sd else None, ed.isoformat() if ed else None,
                    s.get("timeZone"), "confirmed", "busy", "free", "[]", "[]", 0, "{}", h, h, stamp, stamp,
                )
            )  # fmt: skip
        token = body.get("nextPageToken")
        if not token:
            break
    listed = time.perf_counter() - t0
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    insert = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    t = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(insert, rows)
    conn.execute("COMMIT")
    inserted = time.perf_counter() - t
    count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return {"list_seconds": listed, "insert_seconds": inserted, "rows": count, **_call(base, "/_bench/stats")}


# -- orchestration -----------------------------------------------------------------------------


def _child(part: str, db: Path, base: str, key_file: Path) -> dict:
    cmd = [sys.executable, __file__, "--part", part, str(db), base, str(key_file)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"{part} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--part"]:
        part, db, base, key = args[1], Path(args[2]), args[3], Path(args[4])
        result = asyncio.run(_pipeline(db, base, key)) if part == "pipeline" else _floor(db, base, key)
        print(json.dumps(result))
        return
    if args[:1] == ["--serve"]:
        _serve(int(args[1]), Path(args[2]))
        return
    n = int(args[0]) if args else 50_000
    with tempfile.TemporaryDirectory(prefix="chronos-bench-google-") as tmp:
        key = Path(tmp) / "service-account.json"
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(n), str(key)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            base = server.stdout.readline().strip()  # type: ignore[union-attr]
            if not base.startswith("http"):
                raise SystemExit("the fake Google server did not start")
            floor = _child("floor", Path(tmp) / "floor.db", base, key)
            pipe = _child("pipeline", Path(tmp) / "pipeline.db", base, key)
        finally:
            server.stdin.close()  # type: ignore[union-attr]
            server.wait(timeout=30)
    _report(n, floor, pipe)


def _report(n: int, floor: dict, pipe: dict) -> None:
    full, inc = pipe["full"], pipe["incremental"]
    floor_s = floor["list_seconds"] + floor["insert_seconds"]
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    print(f"Google source, {n:,} events — {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    print(f"{'':44} {'seconds':>9} {'events/s':>10} {'requests':>9}")
    print(
        f"{'floor: googleapiclient list + raw insert':44} {floor_s:9.2f} {floor['rows'] / floor_s:10,.0f}"
        f" {floor['lists']:9}"
    )
    print(f"{'  of which listing':44} {floor['list_seconds']:9.2f}")
    stored = full["added"]
    print(
        f"{'pipeline: full sync (google → store)':44} {full['seconds']:9.2f} {stored / full['seconds']:10,.0f}"
        f" {full['lists']:9}"
    )
    ratio = (stored / full["seconds"]) / (floor["rows"] / floor_s)
    print(f"{'  pipeline / floor (target >= 50%)':44} {ratio:9.0%}")
    print(
        f"{'pipeline: incremental, 10 changes':44} {inc['seconds']:9.3f} {'':>10} {inc['lists']:9}"
        f"   server {inc['server_seconds'] * 1000:.1f} ms (target: <= 2 requests, < 200 ms)"
    )
    print(
        f"  full: {full['status']} added={full['added']} failed={full['failed']}; incremental: {inc['status']}"
        f" added={inc['added']} updated={inc['updated']} deleted={inc['deleted']}"
    )
    for part in (full, inc):
        if part.get("error"):
            print(f"  error: {part['error']}")


if __name__ == "__main__":
    main()
