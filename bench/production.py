"""Load figures of the service as shipped: real ``chronos serve`` processes, real HTTP.

Every installed plugin is loaded (as in the Docker image: the kernel, the
builtin and contrib plugins and the dashboard; not the example template), the
settings are the defaults, and the topology is the one ``docker-compose.yml``
runs: API replicas (``chronos serve --no-jobs``) and one ``chronos worker``
on the same database. The clients run in this process, with httpx, each on its
own keep-alive connection; keys are real stored keys created through
``POST /api/v1/keys``.

Scenarios (``--only`` picks one or several, comma-separated):

``writers``
    16 concurrent writers for ``--seconds`` on SQLite: creating events
    (``POST /api/v1/events``), renaming events they created (``PATCH``) and
    enqueuing commands (``POST /api/v1/commands``). Counts "database is
    locked" (in answers and in every process's log) and lost writes: every
    acknowledged write is looked up in the database file afterwards (an event
    must exist with the title of its last acknowledged change; a command must
    exist).
``reads``
    200 concurrent clients on the event API for ``--seconds`` over
    ``--events`` stored events (SQLite): a page of 50 events of one calendar
    over 7 days (60 %), of every calendar over one day (20 %), and single
    events by id (20 %). 5xx count, p50, p99, requests/s.
``queue``
    Lease-and-complete cycles over HTTP, 8 workers polling ``--lease-limit``
    commands at a time (10, then 50) for ``--seconds``: with batched
    completion (one ``POST /api/v1/command-completions`` per leased batch)
    and one by one (``POST /api/v1/commands/{id}/complete``, 10 per poll), on
    SQLite and on PostgreSQL with 1 and 2 API replicas (the workers spread
    over the replicas). Commands handed out twice and acknowledged
    completions missing from the database must be 0.

The SQLite scenarios run one after the other on one deployment (one
database file, which the reads scenario first fills with ``--events``
events); each PostgreSQL run gets its own deployment on a fresh schema.
The worker's start-up (its first run of every job) is over before anything
is measured.

After each scenario the table shows the servers' RSS (VmRSS from
``/proc/<pid>/status``; replicas listed one by one) and where the CPU time
went during the measurement, in cores: the API replicas and the worker, this
client process, and the rest of the machine (the database server, other
load).

Usage::

    python bench/production.py                      # everything, 60 s each
    python bench/production.py --seconds 5 --only writers,reads --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from _fixtures import command_rows, make_schema

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PG_URL = os.environ.get("CHRONOS_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
WHITELIST = [{"system": "bench", "action": "PING", "params": {"n": None}}]
SCENARIOS = ("writers", "reads", "queue")
COLUMNS = (
    "scenario",
    "database",
    "topology",
    "clients",
    "seconds",
    "operations",
    "per second",
    "p50 ms",
    "p99 ms",
    "checks",
    "per server CPU-s",
    "server RSS MB",
    "CPU server / client / rest",
)
TICKS = os.sysconf("SC_CLK_TCK")
LOCKED = "database is locked"


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_delay(pid: int) -> float:
    """Seconds the threads of a process spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def pg_client_ports(pids: list[int], server_port: int) -> set[int]:
    """Local ports of the TCP connections these processes hold to ``server_port``."""
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[9] in inodes and int(f[2].rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


async def pg_backends(dep: Deployment) -> list[int]:
    """PIDs of the PostgreSQL backends serving the deployment's connections (a local server only)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(dep.url)
    ports = pg_client_ports([p.pid for p in dep.procs], url.port or 5432)
    if not ports:
        return []
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database
    )
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", sorted(ports))
    finally:
        await conn.close()
    return [r["pid"] for r in rows if Path(f"/proc/{r['pid']}").exists()]


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (every core, /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / TICKS


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class Deployment:
    """API replicas (``chronos serve --no-jobs``) and one ``chronos worker`` on one database."""

    work: Path
    url: str
    schema: str | None = None
    replicas: int = 1
    admin: str = field(default_factory=lambda: secrets.token_hex(24))
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHRONOS")}
        env.update(
            CHRONOS__DATABASE__URL=self.url,
            CHRONOS_ADMIN_KEY=self.admin,
            CHRONOS_AUDIT_KEY=AUDIT_KEY,
            CHRONOS__LOGGING__LEVEL="warning",
            CHRONOS__PLUGINS__DISABLED=json.dumps(["hello"]),
            CHRONOS__PLUGINS__STRICT="true",
            CHRONOS__COMMANDS__WHITELIST=json.dumps(WHITELIST),
        )
        if self.schema:
            env["CHRONOS__DATABASE__SCHEMA"] = self.schema
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.work / f"{name}.log"
        self.logs.append(log)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("chronos")), *args],
                cwd=self.work,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    async def start(self) -> None:
        # One replica at a time: the first one applies the migrations.
        for i in range(self.replicas):
            port = free_port()
            proc = self._spawn(f"api-{i}", ["serve", "--host", "127.0.0.1", "--port", str(port), "--no-jobs"])
            base = f"http://127.0.0.1:{port}"
            await self._wait_ready(proc, base)
            self.urls.append(base)
        worker = self._spawn("worker", ["worker"])
        await self._wait_worker(worker)

    async def _wait_worker(self, proc: subprocess.Popen) -> None:
        """Until the worker's heartbeat shows in the detailed /health (its start-up is not measured)."""
        deadline = time.monotonic() + 120
        headers = {"Authorization": f"Bearer {self.admin}"}
        async with httpx.AsyncClient(base_url=self.urls[0], headers=headers, timeout=10) as c:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"the worker exited with {proc.returncode}: {self.logs[-1].read_text()[-2000:]}")
                jobs = (await c.get("/health")).json().get("checks", {}).get("jobs", {})
                if jobs.get("status") == "ok" and jobs.get("runners"):
                    break
                await asyncio.sleep(0.5)
            else:
                raise RuntimeError("the worker reported no heartbeat within 120 s")
        # Its first runs of every job (start-up work) are not measured either: until it is idle.
        while time.monotonic() < deadline:
            before = cpu_seconds(proc.pid)
            await asyncio.sleep(1.0)
            if cpu_seconds(proc.pid) - before < 0.05:
                return

    async def _wait_ready(self, proc: subprocess.Popen, base: str) -> None:
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(base_url=base, timeout=5) as c:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {proc.returncode}: {self.logs[-1].read_text()[-2000:]}")
                try:
                    if (await c.get("/health/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{base} was not ready within 120 s")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def rss(self) -> str:
        """VmRSS of each API replica, then the worker."""
        return " + ".join(f"{rss_mb(p.pid):.0f}" for p in self.procs)

    @property
    def database(self) -> str:
        return "SQLite" if self.url.startswith("sqlite") else "PostgreSQL"

    @property
    def topology(self) -> str:
        return f"{self.replicas} API{'s' if self.replicas > 1 else ''} + worker"

    @property
    def sqlite_file(self) -> Path:
        return Path(self.url.split(":///", 1)[1])

    def log_count(self, needle: str) -> int:
        return sum(log.read_text(errors="replace").count(needle) for log in self.logs if log.exists())

    async def key(self, scopes: list[str]) -> str:
        async with httpx.AsyncClient(base_url=self.urls[0], timeout=30) as c:
            r = await c.post(
                "/api/v1/keys",
                json={"name": f"bench {uuid.uuid4().hex[:6]}", "scopes": scopes},
                headers={"Authorization": f"Bearer {self.admin}"},
            )
            r.raise_for_status()
            return r.json()["secret"]


AUDIT_KEY = secrets.token_hex(32)


class Meter:
    """CPU time of the servers, of this process and of the machine over one measurement."""

    def __init__(self, deployment: Deployment, db_pids: list[int] | None = None) -> None:
        self.deployment = deployment
        self.procs = [cpu_seconds(p.pid) for p in deployment.procs]
        self.waits = [run_delay(p.pid) for p in deployment.procs[:-1]]
        self.db = {pid: cpu_seconds(pid) for pid in db_pids or ()}
        self.start = (time.perf_counter(), own_cpu_seconds(), machine_busy_seconds())
        self.client_waits = run_delay(os.getpid())

    def stop(self, db_pids: list[int] | None = None) -> dict[str, Any]:
        """Cores used by the servers / this process / the rest of the machine, the servers' CPU seconds,
        and the cores of each server process (and of the database backends serving them, when known)."""
        wall = time.perf_counter() - self.start[0]
        each = [cpu_seconds(p.pid) - before for p, before in zip(self.deployment.procs, self.procs, strict=True)]
        server = sum(each)
        client = own_cpu_seconds() - self.start[1]
        rest = max(machine_busy_seconds() - self.start[2] - server - client, 0.0)
        split = " + ".join(f"{c / wall:.2f}" for c in each[:-1]) + f" API, {each[-1] / wall:.2f} worker"
        waited = sum(run_delay(p.pid) for p in self.deployment.procs[:-1]) - sum(self.waits)
        if db_pids is not None:
            # A backend that appeared during the run counts with all of its time.
            db = sum(cpu_seconds(pid) - self.db.get(pid, 0.0) for pid in set(db_pids) | set(self.db))
            split += f", {db / wall:.2f} in {len(set(db_pids) | set(self.db))} PostgreSQL backends"
        # Time the API processes were ready to run but the machine gave them no CPU.
        client_waited = run_delay(os.getpid()) - self.client_waits
        split += f"; waiting for a CPU: the API {waited / wall:.2f} s per second, the client {client_waited / wall:.2f}"
        return {
            "cores": f"{server / wall:.2f} / {client / wall:.2f} / {rest / wall:.2f}",
            "server_cpu": server,
            "split": split,
        }


async def app_latency_buckets(dep: Deployment) -> dict[str, dict[float, float]]:
    """The first replica's own request-latency histogram (``/metrics``): per route, the cumulative
    count of requests at or under each bucket bound, timed from the app's first middleware on."""
    async with httpx.AsyncClient(base_url=dep.urls[0], timeout=30) as c:
        text = (await c.get("/metrics", headers={"Authorization": f"Bearer {dep.admin}"})).text
    out: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        if not line.startswith("chronos_http_request_seconds_bucket{"):
            continue
        labels, _, count = line.rpartition(" ")
        fields = dict(part.split("=", 1) for part in labels[labels.index("{") + 1 : -1].split(","))
        bound = float(fields["le"].strip('"'))
        out.setdefault(fields["route"].strip('"'), {})[bound] = float(count)
    return out


def app_latency(before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> str:
    """p50 and p99 of the requests of the run inside the app, as the histogram bucket holding them."""
    parts = []
    for route, buckets in sorted(after.items()):
        counts = {b: n - before.get(route, {}).get(b, 0.0) for b, n in buckets.items()}
        total = counts.get(float("inf"), 0.0)
        if total < 100:
            continue

        def bucket(p: float, counts: dict[float, float] = counts, total: float = total) -> str:
            bound = next(b for b in sorted(counts) if counts[b] >= p * total)
            return "> 10 s" if bound == float("inf") else f"≤ {bound * 1000:g} ms"

        parts.append(f"{route} ({total:,.0f}): p50 {bucket(0.5)}, p99 {bucket(0.99)}")
    return "; ".join(parts)


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


class Outcomes:
    """Answers by kind, and request latencies."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.by_kind: dict[str, list[float]] = {}
        self.ok = 0
        self.server_errors = 0
        self.client_errors = 0
        self.transport_errors = 0
        self.locked = 0
        self.samples: list[str] = []

    async def call(
        self, c: httpx.AsyncClient, method: str, url: str, kind: str = "", **kw: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = await c.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.transport_errors += 1
            self._sample(f"{method} {url}: {type(exc).__name__}: {exc}")
            return None
        self.latencies.append(time.perf_counter() - started)
        if kind:
            self.by_kind.setdefault(kind, []).append(self.latencies[-1])
        if r.status_code >= 400 and "database is locked" in r.text:
            self.locked += 1
        if r.status_code >= 500:
            self.server_errors += 1
            self._sample(f"{method} {url}: {r.status_code} {r.text[:200]}")
        elif r.status_code >= 400:
            self.client_errors += 1
            self._sample(f"{method} {url}: {r.status_code} {r.text[:200]}")
        else:
            self.ok += 1
        return r

    def _sample(self, text: str) -> None:
        if len(self.samples) < 5:
            self.samples.append(text)

    def kinds(self) -> str:
        """p50 / p99 / max in ms of each kind of request, and its share of the requests."""
        total = sum(len(v) for v in self.by_kind.values()) or 1
        return "; ".join(
            f"{kind} ({len(v) / total:.0%}): {pct(v, 0.5):,.0f} / {pct(v, 0.99):,.0f} / {max(v) * 1000:,.0f} ms"
            for kind, v in sorted(self.by_kind.items())
        )

    def failures(self) -> list[str]:
        out = []
        if self.server_errors:
            out.append(f"{self.server_errors} 5xx")
        if self.client_errors:
            out.append(f"{self.client_errors} 4xx")
        if self.transport_errors:
            out.append(f"{self.transport_errors} no answer")
        return out


def client(base: str, secret: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {secret}"}, limits=limits, timeout=120)


# -- scenario 1: concurrent writers on SQLite --------------------------------------------------


async def writers(dep: Deployment, seconds: float, count: int = 16) -> dict[str, Any]:
    db = dep.sqlite_file
    logged = dep.log_count(LOCKED)
    secret = await dep.key(["events.read", "events.write", "commands.manage"])
    out = Outcomes()
    titles: dict[int, str] = {}  # event id -> title of its last acknowledged write
    commands: list[int] = []
    start_at = "2027-03-01T09:00:00+01:00"

    async def writer(c: httpx.AsyncClient, w: int) -> None:
        mine: list[int] = []
        k = 0
        while time.perf_counter() < stop:
            k += 1
            step = k % 8
            if step == 6 and mine:  # rename one of its events
                event_id = random.choice(mine)
                title = f"writer {w} renamed #{k}"
                r = await out.call(c, "PATCH", f"/api/v1/events/{event_id}", "rename", json={"title": title})
                if r is not None and r.status_code == 200:
                    titles[event_id] = title
            elif step == 7:
                r = await out.call(
                    c,
                    "POST",
                    "/api/v1/commands",
                    "enqueue",
                    json={"target_system": "bench", "command": "PING", "params": {"n": k}},
                    headers={"Idempotency-Key": f"w{w}-{k}-{uuid.uuid4().hex}"},
                )
                if r is not None and r.status_code == 201:
                    commands.append(r.json()["id"])
            else:
                title = f"writer {w} event #{k}"
                r = await out.call(
                    c,
                    "POST",
                    "/api/v1/events",
                    "create",
                    json={"title": title, "start": start_at, "end": "2027-03-01T10:00:00+01:00"},
                    headers={"Idempotency-Key": f"w{w}-{k}-{uuid.uuid4().hex}"},
                )
                if r is not None and r.status_code == 201:
                    titles[r.json()["id"]] = title
                    mine.append(r.json()["id"])

    async with client(dep.urls[0], secret, count) as c:
        meter = Meter(dep)
        stop = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(writer(c, w) for w in range(count)))
        elapsed = time.perf_counter() - started
        cpu = meter.stop()

    # Every acknowledged write, looked up in the database file (read while the service runs).
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        stored = dict(conn.execute("SELECT id, title FROM events WHERE source = 'local'").fetchall())
        stored_commands = {row[0] for row in conn.execute("SELECT id FROM external_commands")}
    lost = sum(1 for i, t in titles.items() if stored.get(i) != t)
    lost += sum(1 for i in commands if i not in stored_commands)
    locked = out.locked + dep.log_count(LOCKED) - logged
    checks = [f"{locked} locked", f"{lost} lost", *out.failures()]
    note = f"{len(titles)} events, {len(commands)} commands acknowledged; p50 / p99 / max by kind: {out.kinds()}"
    return row("writers", dep, count, elapsed, out.ok, out, checks, cpu, bad=bool(locked or lost), note=note)


# -- scenario 2: concurrent readers on the event API -------------------------------------------


async def reads(dep: Deployment, seconds: float, count: int = 200) -> dict[str, Any]:
    from events_query import query_mix

    db = dep.sqlite_file
    logged = dep.log_count(LOCKED)
    secret = await dep.key(["events.read"])
    rng = random.Random(7)
    mix = query_mix(rng, 200)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM events")]

    def request(r: random.Random) -> tuple[str, str]:
        roll = r.random()
        if roll < 0.2:
            return f"/api/v1/events/{r.choice(ids)}", "by id"
        if roll < 0.4:
            p = r.choice(mix["1d all calendars"])
            return str(httpx.URL("/api/v1/events", params=window(p))), "1 day all calendars"
        p = r.choice(mix["7d one calendar"])
        url = httpx.URL("/api/v1/events", params={**window(p), "calendar_id": p["calendar_id"][0]})
        return str(url), "7 days one calendar"

    out = Outcomes()

    async def reader(c: httpx.AsyncClient, n: int) -> None:
        r = random.Random(n)
        while time.perf_counter() < stop:
            await out.call(c, "GET", *request(r))

    # One httpx client per reader: a shared pool of 200 connections costs the client more CPU per
    # request than the server spends answering it (the pool is searched on every request).
    readers = [client(dep.urls[0], secret, 1) for _ in range(count)]
    try:
        await asyncio.gather(*(out.call(c, "GET", *request(rng)) for c in readers))  # open the connections
        out.__init__()  # type: ignore[misc]
        in_app = await app_latency_buckets(dep)
        meter = Meter(dep)
        stop = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(reader(c, n) for n, c in enumerate(readers)))
        elapsed = time.perf_counter() - started
        cpu = meter.stop()
    finally:
        for c in readers:
            await c.aclose()
    locked = out.locked + dep.log_count(LOCKED) - logged
    checks = [f"{out.server_errors} 5xx", *[f for f in out.failures() if "5xx" not in f]]
    if locked:
        checks.append(f"{locked} locked")
    in_app = app_latency(in_app, await app_latency_buckets(dep))
    note = f"{len(ids):,} events stored; p50 / p99 / max by kind: {out.kinds()}; inside the app: {in_app}"
    return row("reads", dep, count, elapsed, out.ok, out, checks, cpu, bad=bool(locked), note=note)


def window(p: dict[str, Any]) -> dict[str, Any]:
    return {"from": p["from"].isoformat(), "to": p["to"].isoformat(), "limit": 50}


# -- scenario 3: lease-and-complete over HTTP --------------------------------------------------


async def seed_commands(url: str, schema: str | None, n: int) -> None:
    """Queue ``n`` due commands with bulk inserts (setup, not measured)."""
    from sqlalchemy import insert

    from chronos.db.engine import Database
    from chronos.plugin import utcnow

    from chronos_commands.models import ExternalCommand

    db = Database(url, schema=schema)
    now = utcnow() - timedelta(seconds=1)
    try:
        for start in range(0, n, 2000):
            async with db.write() as s:
                await s.execute(insert(ExternalCommand.__table__), command_rows(start, min(n, start + 2000), now))
    finally:
        await db.dispose()


async def pending_count(url: str, schema: str | None) -> int:
    from sqlalchemy import func, select

    from chronos.db.engine import Database

    from chronos_commands.models import ExternalCommand

    T = ExternalCommand.__table__
    db = Database(url, schema=schema)
    try:
        async with db.read() as s:
            query = select(func.count()).where(T.c.status == "pending", T.c.target_system == "bench")
            return int((await s.execute(query)).scalar_one())
    finally:
        await db.dispose()


async def completed_ids(url: str, schema: str | None) -> set[int]:
    from sqlalchemy import select

    from chronos.db.engine import Database

    from chronos_commands.models import ExternalCommand

    T = ExternalCommand.__table__
    db = Database(url, schema=schema)
    try:
        async with db.read() as s:
            return set((await s.execute(select(T.c.id).where(T.c.status == "completed"))).scalars())
    finally:
        await db.dispose()


# Commands queued per second of measurement: more than the runs complete on this
# kind of machine, so the queue does not run dry (a run that drains it ends early).
QUEUED_PER_SECOND = {"batched": 2500, "one-by-one": 1000}


async def queue_on_postgresql(work: Path, seconds: float, replicas: int, mode: str, limit: int) -> dict[str, Any]:
    """A deployment of its own on a fresh schema of the PostgreSQL database."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    await make_schema(PG_URL, schema)
    dep = Deployment(work, PG_URL, schema, replicas)
    try:
        await dep.start()
        return await queue(dep, seconds, mode, limit)
    finally:
        dep.stop()
        await make_schema(PG_URL, schema, drop=True)


async def queue(dep: Deployment, seconds: float, mode: str, limit: int, count: int = 8) -> dict[str, Any]:
    url, schema = dep.url, dep.schema
    logged = dep.log_count(LOCKED)
    secret = await dep.key(["commands.manage"])
    n = max(int(QUEUED_PER_SECOND[mode] * seconds), 2000)
    await seed_commands(url, schema, n - await pending_count(url, schema))
    out = Outcomes()
    handed: list[int] = []
    acked: list[int] = []
    dry: list[bool] = []

    async def worker(c: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop:
            r = await out.call(c, "GET", "/api/v1/commands/bench", params={"limit": limit, "lease_seconds": 300})
            if r is None or r.status_code != 200:
                continue
            items = r.json()["items"]
            if not items:
                dry.append(True)
                return
            handed.extend(item["id"] for item in items)
            if mode == "batched":
                body = {
                    "items": [
                        {"id": item["id"], "lease_token": item["lease_token"], "result": {"ok": True}} for item in items
                    ]
                }
                r = await out.call(c, "POST", "/api/v1/command-completions", json=body)
                if r is not None and r.status_code == 200:
                    acked.extend(o["id"] for o in r.json()["items"] if o["status"] == 200)
            else:
                for item in items:
                    r = await out.call(
                        c,
                        "POST",
                        f"/api/v1/commands/{item['id']}/complete",
                        json={"result": {"ok": True}, "lease_token": item["lease_token"]},
                    )
                    if r is not None and r.status_code == 200:
                        acked.append(item["id"])

    # Workers spread over the replicas, one connection each.
    clients = [client(base, secret, count) for base in dep.urls]
    postgresql = dep.schema is not None
    try:
        meter = Meter(dep, await pg_backends(dep) if postgresql else None)
        stop = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(worker(clients[w % len(clients)]) for w in range(count)))
        elapsed = time.perf_counter() - started
        cpu = meter.stop(await pg_backends(dep) if postgresql else None)
    finally:
        for c in clients:
            await c.aclose()
    done = await completed_ids(url, schema)
    locked = out.locked + dep.log_count(LOCKED) - logged
    dup = len(handed) - len(set(handed))
    lost = len(set(acked) - done)
    checks = [f"{dup} dup", f"{lost} lost", *out.failures()]
    if locked:
        checks.append(f"{locked} locked")
    note = f"{n:,} commands queued" + (" (the queue ran dry)" if dry else "")
    return row(
        f"queue {mode}, {limit}/poll",
        dep,
        count,
        elapsed,
        len(acked),
        out,
        checks,
        cpu,
        bad=bool(dup or lost or locked),
        note=note,
    )


# -- report -----------------------------------------------------------------------------------


def row(
    scenario: str,
    dep: Deployment,
    clients: int,
    elapsed: float,
    operations: int,
    out: Outcomes,
    checks: list[str],
    cpu: dict[str, Any],
    *,
    bad: bool,
    note: str,
) -> dict[str, Any]:
    """A line of the table, with the deployment's servers' RSS read now; ``bad`` as well when any answer failed."""
    values = {
        "scenario": scenario,
        "database": dep.database,
        "topology": dep.topology,
        "clients": str(clients),
        "seconds": f"{elapsed:.1f}",
        "operations": f"{operations:,}",
        "per second": f"{operations / elapsed:,.0f}" if elapsed else "0",
        "p50 ms": f"{pct(out.latencies, 0.50):.1f}",
        "p99 ms": f"{pct(out.latencies, 0.99):.1f}",
        "checks": ", ".join(checks),
        "per server CPU-s": f"{operations / cpu['server_cpu']:,.0f}" if cpu["server_cpu"] else "",
        "server RSS MB": dep.rss(),
        "CPU server / client / rest": cpu["cores"],
    }
    note += f"; server cores: {cpu['split']}"
    return {"values": values, "bad": bad or bool(out.failures()), "note": note, "samples": out.samples}


def failed_row(scenario: str, database: str, topology: str, exc: BaseException) -> dict[str, Any]:
    values = dict.fromkeys(COLUMNS, "")
    values.update(scenario=scenario, database=database, topology=topology, checks=f"failed: {exc!r}"[:200])
    return {"values": values, "bad": True, "note": "", "samples": []}


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|")
    for r in rows:
        print("| " + " | ".join(r["values"][c] for c in COLUMNS) + " |")


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        gib = f", {int(mem.split()[1]) / 1024**2:.0f} GiB"
    except (OSError, StopIteration):
        gib = ""
    return f"{cpu}, {os.cpu_count()} CPUs{gib}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"


async def run(args: argparse.Namespace) -> int:
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        raise SystemExit(
            f"--only: unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}"
        )
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    global PG_URL
    PG_URL = args.pg_url
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    limits = sorted({int(n) for n in args.lease_limit.split(",") if n.strip()})
    if set(modes) - set(QUEUED_PER_SECOND):
        raise SystemExit(f"--modes: choose from {', '.join(QUEUED_PER_SECOND)}")
    # The SQLite scenarios share one deployment (one database), one after the other, as a
    # service sees them: its RSS is read after each.
    on_sqlite: list[tuple[str, Any]] = []
    if "writers" in only:
        on_sqlite.append(("writers", lambda dep: writers(dep, args.seconds)))
    if "reads" in only:
        on_sqlite.append(("reads", lambda dep: reads(dep, args.seconds)))
    if "queue" in only and "sqlite" in backends:
        on_sqlite += [
            (f"queue {m}", lambda dep, m=m, n=n: queue(dep, args.seconds, m, n)) for m, n in queue_runs(modes, limits)
        ]
    on_postgresql: list[tuple[str, Any]] = []
    if "queue" in only and "postgresql" in backends:
        on_postgresql += [
            (
                f"queue {m}",
                lambda work, r=replicas, m=m, n=n: queue_on_postgresql(work, args.seconds, r, m, n),
            )
            for m, n in queue_runs(modes, limits)
            for replicas in (1, 2)
        ]
    rows: list[dict[str, Any]] = []
    loads = [os.getloadavg()[0]]

    def done(result: dict[str, Any]) -> None:
        loads.append(os.getloadavg()[0])
        rows.append(result)
        print("  " + " | ".join(result["values"][c] for c in COLUMNS), file=sys.stderr)

    if on_sqlite:
        work = Path(tempfile.mkdtemp(prefix="chronos-production-"))
        db = work / "chronos.db"
        try:
            if "reads" in only:
                from events_query import load

                print(f"loading {args.events:,} events …", file=sys.stderr)
                await load(db, args.events, 5000)
            dep = Deployment(work, f"sqlite+aiosqlite:///{db}")
            await dep.start()
            for scenario, fn in on_sqlite:
                print(f"{scenario} on SQLite …", file=sys.stderr)
                try:
                    done(await fn(dep))
                except Exception as exc:  # noqa: BLE001 - a failed run is a row of the table
                    done(failed_row(scenario, "SQLite", "1 API + worker", exc))
        except Exception as exc:  # noqa: BLE001
            done(failed_row("start", "SQLite", "1 API + worker", exc))
        finally:
            if "dep" in locals():
                dep.stop()
            shutil.rmtree(work, ignore_errors=True)
    for i, (scenario, fn) in enumerate(on_postgresql):
        topology = f"{1 + i % 2} API"
        print(f"{scenario} on PostgreSQL, {topology} …", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix="chronos-production-"))
        try:
            done(await fn(work))
        except Exception as exc:  # noqa: BLE001 - a failed run is a row of the table
            done(failed_row(scenario, "PostgreSQL", topology, exc))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nChronos Engine as shipped ({args.seconds:g} s per run) — {machine()}; load average (1 min) between runs"
        f" {min(loads):.1f}–{max(loads):.1f}\n"
    )
    print_table(rows)
    print()
    for r in rows:
        if r["note"]:
            print(f"- {r['values']['scenario']} ({r['values']['database']}, {r['values']['topology']}): {r['note']}")
    pg = {(r["values"]["scenario"], r["values"]["topology"]): r["values"] for r in rows if _pg(r)}
    for (scenario, topology), two in pg.items():
        one = pg.get((scenario, "1 API + worker"))
        if topology == "2 APIs + worker" and one and one["per second"] and two["per second"]:
            a, b = (float(x["per second"].replace(",", "")) for x in (one, two))
            print(f"- PostgreSQL {scenario}: 2 replicas / 1 replica = {b / a if a else 0:.2f}× (target 1.6×)")
    print(
        "- CPU in cores during the measurement: the API replicas and the worker / this client process /"
        " the rest of the machine (the database server, other load)"
    )
    bad = [r for r in rows if r["bad"]]
    for r in bad:
        for sample in r["samples"]:
            print(f"  {r['values']['scenario']}: {sample}", file=sys.stderr)
    if bad:
        print(f"\nFAILED: {len(bad)} run(s) with locked errors, lost writes, duplicates or error answers")
        return 1
    return 0


def _pg(r: dict[str, Any]) -> bool:
    return r["values"]["database"] == "PostgreSQL" and r["values"]["scenario"].startswith("queue")


def queue_runs(modes: list[str], limits: list[int]) -> list[tuple[str, int]]:
    """Batched completion with every lease size; one by one with the smallest (its cost is per command)."""
    return [(m, n) for m in modes for n in (limits if m == "batched" else limits[:1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement time of each run")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--backends", default="sqlite,postgresql", help="queue scenario: sqlite, postgresql")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL for the queue runs (a schema per run)")
    parser.add_argument("--events", type=int, default=20_000, help="events stored for the reads scenario")
    parser.add_argument("--modes", default="batched,one-by-one", help="queue scenario: how workers complete")
    parser.add_argument(
        "--lease-limit", default="10,50", help="commands per poll in the queue scenario (comma-separated: one run each)"
    )
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
