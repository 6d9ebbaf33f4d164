"""Command queue benchmark: lease-and-complete cycles per second.

For SQLite and PostgreSQL, with 1, 4 and 8 concurrent workers, N commands are
queued, then the workers poll (``limit`` commands per lease) and complete each
command until the queue is empty. Two paths are measured:

* ``service``: in-process, through the plugin's ``CommandQueue`` (what the
  HTTP routes call), no HTTP and no authentication;
* ``http``: a real uvicorn server (one process, one worker) in a subprocess,
  with the workers as httpx clients in this process — every poll and every
  completion is an authenticated HTTP request.

Three worker modes: ``one-by-one`` completes each leased command before the
next; ``batch`` completes a leased batch concurrently, as
``examples/clients/command_worker.py`` does (more completions in flight, so
the queue's group commit writes more of them per transaction); ``ack`` (HTTP
only) acknowledges the whole leased batch with one ``POST
/api/v1/command-completions``.

A cycle is one command leased and completed. Every command id handed out is
recorded; ``dup`` counts ids handed out more than once (must be 0) and
``done`` checks the database at the end (every command completed).

Usage::

    python bench/commands.py                     # both backends, both paths
    python bench/commands.py --backends sqlite --paths service -n 5000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import httpx

from _fixtures import command_rows, make_schema

PG_URL = os.environ.get("CHRONOS_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
WHITELIST = [{"system": "bench", "action": "PING", "params": {"n": None}}]


def settings_for(url: str, schema: str | None) -> Any:
    from chronos.settings import load_settings

    database: dict[str, Any] = {"url": url, "pool_size": 10}
    if schema:
        database["schema"] = schema
    return load_settings(
        path=None,
        env={},
        database=database,
        logging={"level": "error"},
        plugins={"enabled": ["commands"]},
        commands={"whitelist": WHITELIST},
    )


async def seed(app: Any, n: int) -> None:
    """Queue ``n`` commands with one bulk insert (setup, not measured)."""
    from sqlalchemy import insert

    from chronos.plugin import utcnow

    from chronos_commands.models import ExternalCommand

    now = utcnow()
    async with app.state.chronos.db.write() as s:
        for i in range(0, n, 1000):
            await s.execute(insert(ExternalCommand.__table__), command_rows(i, min(n, i + 1000), now))


async def verify(app: Any, n: int) -> int:
    from sqlalchemy import func, select

    from chronos_commands.models import ExternalCommand

    T = ExternalCommand.__table__
    async with app.state.chronos.db.read() as s:
        return (await s.execute(select(func.count()).where(T.c.status == "completed"))).scalar_one()


async def run_service(app: Any, workers: int, limit: int, concurrent: bool) -> tuple[list[int], float]:
    from chronos_commands.state import queue_of

    queue = queue_of(app.state.chronos)
    seen: list[int] = []

    async def done(item: dict[str, Any]) -> None:
        seen.append(item["id"])
        await queue.complete(item["id"], {"ok": True}, token=item["lease_token"])

    async def worker() -> None:
        while True:
            items = await queue.lease("bench", limit=limit, lease_seconds=300)
            if not items:
                return
            if concurrent:  # like examples/clients/command_worker.py: the leased batch at once
                await asyncio.gather(*(done(item) for item in items))
            else:
                for item in items:
                    await done(item)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return seen, time.perf_counter() - start


async def run_http(base: str, secret: str, workers: int, limit: int, mode: str) -> tuple[list[int], float]:
    seen: list[int] = []
    headers = {"Authorization": f"Bearer {secret}"}
    concurrent = mode == "batch"

    async def done(c: httpx.AsyncClient, item: dict[str, Any]) -> None:
        seen.append(item["id"])
        r = await c.post(
            f"/api/v1/commands/{item['id']}/complete", json={"result": {"ok": True}, "lease_token": item["lease_token"]}
        )
        r.raise_for_status()

    async def worker(c: httpx.AsyncClient) -> None:
        while True:
            r = await c.get("/api/v1/commands/bench", params={"limit": limit, "lease_seconds": 300})
            r.raise_for_status()
            items = r.json()["items"]
            if not items:
                return
            if mode == "ack":  # the whole leased batch acknowledged in one request
                seen.extend(item["id"] for item in items)
                r = await c.post(
                    "/api/v1/command-completions",
                    json={
                        "items": [
                            {"id": item["id"], "lease_token": item["lease_token"], "result": {"ok": True}}
                            for item in items
                        ]
                    },
                )
                r.raise_for_status()
                assert all(o["status"] == 200 for o in r.json()["items"]), r.text
            elif concurrent:
                await asyncio.gather(*(done(c, item) for item in items))
            else:
                for item in items:
                    await done(c, item)

    per_worker = limit if concurrent else 1
    limits = httpx.Limits(max_connections=workers * per_worker, max_keepalive_connections=workers * per_worker)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as c:
        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(workers)))
        return seen, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_run(backend: str, path: str, workers: int, n: int, limit: int, tmp: str, mode: str) -> dict[str, Any]:
    from chronos.app import create_app
    from chronos.testing import create_test_key, running_app

    schema = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/bench-{uuid.uuid4().hex[:8]}.db"
    else:
        url, schema = PG_URL, f"bench_{uuid.uuid4().hex[:12]}"
        await make_schema(PG_URL, schema)
    try:
        app = create_app(settings_for(url, schema), run_jobs=False, env={})
        async with running_app(app):
            await seed(app, n)
            if path == "service":
                seen, elapsed = await run_service(app, workers, limit, mode != "one-by-one")
            else:
                secret = await create_test_key(app, ["commands.manage"])
                port = free_port()
                env = {**os.environ, "BENCH_DB_URL": url, "BENCH_DB_SCHEMA": schema or "", "BENCH_PORT": str(port)}
                proc = subprocess.Popen([sys.executable, __file__, "--serve"], env=env)
                try:
                    base = f"http://127.0.0.1:{port}"
                    async with httpx.AsyncClient() as probe:
                        for _ in range(300):
                            try:
                                if (await probe.get(base + "/health")).status_code < 500:
                                    break
                            except httpx.TransportError:
                                await asyncio.sleep(0.1)
                    seen, elapsed = await run_http(base, secret, workers, limit, mode)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
            done = await verify(app, n)
    finally:
        if schema:
            await make_schema(PG_URL, schema, drop=True)
    return {
        "backend": backend,
        "path": path,
        "mode": mode,
        "workers": workers,
        "cycles": len(seen),
        "seconds": elapsed,
        "rate": len(seen) / elapsed if elapsed else 0.0,
        "dup": len(seen) - len(set(seen)),
        "done": done == n,
    }


async def hop_latency(tmp: str, n: int = 300) -> float:
    """Median time of one write transaction with one UPDATE: what the machine gives every statement."""
    from sqlalchemy import text

    from chronos.db.engine import Database

    db = Database(f"sqlite+aiosqlite:///{tmp}/calibrate.db")
    async with db.write() as s:
        await s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"))
        await s.execute(text("INSERT INTO t VALUES (1, 0)"))
    times = []
    for i in range(n):
        start = time.perf_counter()
        async with db.write() as s:
            await s.execute(text("UPDATE t SET v = :v WHERE id = 1"), {"v": i})
        times.append(time.perf_counter() - start)
    await db.dispose()
    return sorted(times)[n // 2]


def serve() -> None:
    """The HTTP server of the ``http`` path (runs in a subprocess)."""
    import uvicorn

    from chronos.app import create_app

    app = create_app(
        settings_for(os.environ["BENCH_DB_URL"], os.environ["BENCH_DB_SCHEMA"] or None), run_jobs=False, env={}
    )
    # A long keep-alive: idle pooled connections must not be closed under the clients' feet.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ["BENCH_PORT"]),
        log_level="error",
        access_log=False,
        loop="asyncio",
        timeout_keep_alive=300,
        backlog=4096,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--paths", default="service,http")
    parser.add_argument("--workers", default="1,4,8")
    parser.add_argument("-n", type=int, default=4000, help="commands per run")
    parser.add_argument("--limit", type=int, default=10, help="commands per lease (poll)")
    parser.add_argument(
        "--modes",
        default="one-by-one,batch,ack",
        help="one-by-one: a worker completes its leased commands one after another;"
        " batch: all at once, as examples/clients/command_worker.py does;"
        " ack: the leased batch acknowledged with one POST /command-completions (http only)",
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        calibration = await hop_latency(tmp)
        for backend in args.backends.split(","):
            for path in args.paths.split(","):
                for mode in args.modes.split(","):
                    if mode == "ack" and path != "http":
                        continue  # in-process, "ack" is "batch"
                    for workers in (int(w) for w in args.workers.split(",")):
                        n = args.n if path == "service" else max(args.n // 2, 500)
                        try:
                            row = await one_run(backend, path, workers, n, args.limit, tmp, mode)
                        except Exception as exc:  # noqa: BLE001 - report the failed run in the table
                            row = {
                                "backend": backend,
                                "path": path,
                                "mode": mode,
                                "workers": workers,
                                "cycles": 0,
                                "seconds": 0.0,
                                "rate": 0.0,
                                "dup": 0,
                                "done": False,
                                "error": f"{type(exc).__name__}: {exc}"[:80],
                            }
                        rows.append(row)
                        print(
                            f"  {backend:10} {path:8} {mode:10} {workers} workers: {row['rate']:8.0f} cycles/s",
                            file=sys.stderr,
                        )
    print(
        f"\nlease-and-complete cycles/s (limit={args.limit} per poll)  —  {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}, load avg "
        f"{os.getloadavg()[0]:.1f}; one SQLite write transaction with one UPDATE through the kernel's "
        f"Database took {calibration * 1000:.2f} ms (median) on this machine during the run"
    )
    print(
        f"| {'backend':10} | {'path':8} | {'mode':10} | {'workers':>7} | {'cycles':>7} | {'seconds':>8} | "
        f"{'cycles/s':>9} | {'dup':>3} | all completed |"
    )
    print(f"|{'-' * 12}|{'-' * 10}|{'-' * 12}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 11}|{'-' * 5}|{'-' * 15}|")
    for r in rows:
        print(
            f"| {r['backend']:10} | {r['path']:8} | {r['mode']:10} | {r['workers']:>7} | {r['cycles']:>7} | "
            f"{r['seconds']:>8.2f} | {r['rate']:>9.0f} | {r['dup']:>3} | {'yes' if r['done'] else 'NO':13} |"
            + (f" failed: {r['error']}" if r.get("error") else "")
        )
    bad = [r for r in rows if r["dup"] or not r["done"]]
    if bad:
        print(f"\nFAILED: {len(bad)} run(s) handed a command out twice or left commands unfinished", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve()
    else:
        asyncio.run(main())
