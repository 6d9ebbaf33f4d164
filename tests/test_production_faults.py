"""Faults operators meet, with real processes: the database's disk fills up, PostgreSQL restarts
under load, and several worker processes serve one port.

Each test starts ``chronos serve`` as a subprocess and stops it by its PID. The PostgreSQL restart
uses a private throwaway cluster (``initdb`` + ``pg_ctl`` as the ``postgres`` user), never the
shared test server; the full disk is a small tmpfs the test mounts. Both need root and are
skipped with the reason when the machine does not allow them.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chronos.testing import backends
from kernel_support import CHRONOS, ROOT, clean_env, fake_distribution, write_config

ADMIN_KEY = "f4" * 24
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if value := check():
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def serving(
    config: Path, *args: str, stop_timeout: float = 30, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``chronos serve`` on a free port until /health/ready answers 200; SIGTERM (then SIGKILL) after."""
    port = free_port()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [CHRONOS, "serve", "--config", str(config), "--port", str(port), *args],
            cwd=ROOT,
            env=clean_env(CHRONOS_ADMIN_KEY=ADMIN_KEY, **(env or {})),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"

        def output() -> str:
            log.seek(0)
            return log.read()[-4000:]

        try:
            try:
                wait_for(
                    lambda: proc.poll() is not None or httpx.get(f"{base}/health/ready", timeout=2).status_code == 200,
                    90,
                    "the server to be ready",
                )
            except AssertionError:
                raise AssertionError(output()) from None
            assert proc.poll() is None, output()
            yield proc, base
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


class Writers:
    """Threads creating local events over HTTP, keeping every acknowledged id and every other answer."""

    def __init__(self, base: str, count: int = 4, description: str = "") -> None:
        self.base, self.description = base, description
        self.acked: list[int] = []
        self.refused: list[httpx.Response] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(count)]

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def one(self, client: httpx.Client, title: str) -> httpx.Response:
        event = {
            "title": title,
            "start": "2026-03-01T10:00:00Z",
            "end": "2026-03-01T11:00:00Z",
            "description": self.description,
        }
        return client.post(f"{self.base}/api/v1/events", json=event, headers=AUTH)

    def _write(self, n: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                try:
                    r = self.one(client, f"writer {n} #{i}")
                except httpx.HTTPError as exc:  # the server itself must stay up
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(0.05)
                    continue
                if r.status_code == 201:
                    self.acked.append(r.json()["id"])
                else:
                    self.refused.append(r)
                    time.sleep(0.05)

    def wait_acked(self, more_than: int, timeout: float = 30) -> None:
        wait_for(lambda: len(self.acked) > more_than, timeout, f"more than {more_than} acknowledged writes")


def assert_problem(r: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["type"] == f"urn:chronos:problem:{type_}", body
    assert body["status"] == status and body["detail"], body
    return body


# -- which database errors are the operator's ------------------------------------------------------------


def _wrapped(orig: BaseException) -> BaseException:
    """``orig`` as SQLAlchemy raises it from a statement."""
    from sqlalchemy.exc import OperationalError

    return OperationalError("INSERT ...", {}, orig)


def test_storage_failures_are_told_apart_from_other_errors():
    import asyncpg

    from chronos.db.engine import storage_failure

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = 5  # type: ignore[attr-defined]
    assert storage_failure(_wrapped(full)) == "full"
    assert storage_failure(_wrapped(locked)) is None
    assert storage_failure(asyncpg.exceptions.DiskFullError("could not extend file")) == "full"
    for down in (
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 5432)"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5432)"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ):
        assert storage_failure(_wrapped(down)) == "unreachable", down
    for other in (ValueError("bad"), asyncpg.exceptions.UniqueViolationError("duplicate key"), FileNotFoundError()):
        assert storage_failure(_wrapped(other)) is None, other


# -- the SQLite database's disk fills up ------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the volume has no byte left."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


@pytest.mark.skipif("sqlite" not in backends(), reason="SQLite is not among CHRONOS_TEST_BACKENDS")
def test_sqlite_disk_full_refuses_writes_with_503_keeps_reads_and_recovers(tmp_path):
    with small_disk(tmp_path / "vol", "24m") as vol:
        db_file = vol / "chronos.db"
        cfg = write_config(
            tmp_path / "c.yaml",
            {
                "database": {"url": f"sqlite+aiosqlite:///{db_file}"},
                "logging": {"level": "warning"},
                "plugins": {"enabled": ["events"]},
            },
        )
        with serving(cfg, "--no-jobs") as (_proc, base), httpx.Client(timeout=30) as client:
            writer = Writers(base, description="x" * 4000)
            first = writer.one(client, "before the disk fills")
            assert first.status_code == 201, first.text
            kept = first.json()["id"]

            fill(vol / "filler")
            answers = [writer.one(client, f"on a full disk #{i}") for i in range(300)]
            full = [r for r in answers if r.status_code != 201]
            assert full, "300 writes of 4 kB fit on a full disk"
            for r in full:
                assert_problem(r, 503, "storage-full")
                assert "Free space" in r.json()["detail"]
                assert r.headers["retry-after"]
            # Reads keep working while writes are refused.
            assert client.get(f"{base}/api/v1/events/{kept}", headers=AUTH).status_code == 200
            listed = client.get(f"{base}/api/v1/events", params={"direction": "all"}, headers=AUTH)
            assert listed.status_code == 200 and listed.json()["items"], listed.text
            assert httpx.get(f"{base}/health/live").status_code == 200
            acked = [kept] + [r.json()["id"] for r in answers if r.status_code == 201]

            (vol / "filler").unlink()
            again = writer.one(client, "after space returned")
            assert again.status_code == 201, again.text
            acked.append(again.json()["id"])
            for event_id in acked:
                assert client.get(f"{base}/api/v1/events/{event_id}", headers=AUTH).status_code == 200

        with contextlib.closing(sqlite3.connect(db_file)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            stored = {row[0] for row in conn.execute("SELECT id FROM events")}
        assert set(acked) <= stored


# -- PostgreSQL restarts under load ------------------------------------------------------------------------


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, on a free port, with trust auth,
    run as the ``postgres`` OS user: stopping it disturbs nobody else."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.root, self.port = bindir, root, free_port()
        self.data = root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> str:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{program}: {done.stdout}{done.stderr}"
        return done.stdout

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def query(self, sql: str) -> list[str]:
        out = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-At", "-c", sql)
        return out.split()


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    if "postgresql" not in backends():
        pytest.skip("PostgreSQL is not among CHRONOS_TEST_BACKENDS")
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bindirs or os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("a private PostgreSQL cluster needs root, runuser and /usr/lib/postgresql/*/bin here")
    root = Path(tempfile.mkdtemp(prefix="chronos-pg-"))
    shutil.chown(root, "postgres")
    cluster = PrivateCluster(Path(bindirs[-1]), root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(AssertionError):
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_restart_under_load_answers_503_recovers_and_loses_nothing(private_cluster, tmp_path):
    pg = private_cluster
    cfg = write_config(
        tmp_path / "c.yaml",
        {"database": {"url": pg.url}, "logging": {"level": "warning"}, "plugins": {"enabled": ["events"]}},
    )
    with serving(cfg) as (proc, base), httpx.Client(timeout=30) as client:
        wait_for(lambda: httpx.get(f"{base}/health").status_code == 200, 60, "/health to answer 200")
        with Writers(base, count=4) as writers:
            writers.wait_acked(20)
            pg.stop("immediate")  # every connection dropped at once, as in a crash
            down_at = time.monotonic()
            wait_for(lambda: httpx.get(f"{base}/health").status_code == 503, 15, "/health to answer 503")
            assert httpx.get(f"{base}/health/ready").status_code == 503
            assert httpx.get(f"{base}/health/live").status_code == 200
            body = assert_problem(writers.one(client, "while down"), 503, "database-unavailable")
            assert "Retry" in body["detail"]
            time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
            pg.start()
            # The same process recovers: healthy again, and writes are acknowledged again.
            wait_for(lambda: httpx.get(f"{base}/health").status_code == 200, 60, "/health to answer 200 again")
            writers.wait_acked(len(writers.acked) + 20)
        assert proc.poll() is None

    assert not writers.errors, writers.errors[:5]
    assert writers.refused, "no write was refused while the database was down"
    for r in writers.refused:
        assert_problem(r, 503, "database-unavailable")
    stored = {int(v) for v in pg.query("SELECT id FROM events")}
    assert set(writers.acked) <= stored, sorted(set(writers.acked) - stored)[:10]


# -- several worker processes on one port ------------------------------------------------------------------


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its parent counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif("sqlite" not in backends(), reason="SQLite is not among CHRONOS_TEST_BACKENDS")
def test_serve_with_two_workers_answers_from_two_processes_and_sigterm_stops_all(tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'chronos.db'}"},
            "logging": {"level": "warning"},
            "plugins": {"enabled": ["events"]},
        },
    )
    with serving(cfg, "--workers", "2", "--no-jobs") as (proc, base):
        pids: set[int] = set()

        def both_answered() -> bool:
            # A new connection each time: the kernel hands connections to either worker.
            r = httpx.get(f"{base}/health", headers=AUTH, timeout=5)
            assert r.status_code == 200, r.text
            pids.add(r.json()["pid"])
            return len(pids) == 2

        wait_for(both_answered, 60, "answers from two worker processes")
        assert proc.pid not in pids
        # Both share one database: a write through one is read through the other.
        created = httpx.post(
            f"{base}/api/v1/events",
            json={"title": "shared", "start": "2026-03-01T10:00:00Z", "end": "2026-03-01T11:00:00Z"},
            headers=AUTH,
        )
        assert created.status_code == 201, created.text
        for _ in range(6):
            assert httpx.get(f"{base}/api/v1/events/{created.json()['id']}", headers=AUTH).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    wait_for(lambda: all(gone(pid) for pid in pids), 10, "every worker process to exit")


# -- SIGTERM drains ----------------------------------------------------------------------------------------


def ics_calendar(count: int) -> str:
    events = "".join(
        f"BEGIN:VEVENT\r\nUID:e{i}\r\nDTSTART:20270101T{i % 24:02d}0000Z\r\nDTEND:20270101T{i % 24:02d}3000Z\r\n"
        f"SUMMARY:entry {i}\r\nEND:VEVENT\r\n"
        for i in range(count)
    )
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//drain test//EN\r\n{events}END:VCALENDAR\r\n"


#: An enricher taking 50 ms a batch: a sync of many batches that is still running at SIGTERM.
SLOW_ENRICHER = """
import asyncio

from chronos.plugin import Enricher, hookimpl


class Slow(Enricher):
    name = "slow"

    async def enrich(self, events, session, ctx):
        await asyncio.sleep(0.05)


@hookimpl
def register_enrichers(ctx):
    return [Slow()]
"""


@pytest.mark.skipif("sqlite" not in backends(), reason="SQLite is not among CHRONOS_TEST_BACKENDS")
def test_sigterm_finishes_the_request_in_flight_stops_the_sync_after_its_batch_and_exits(tmp_path):
    ics = tmp_path / "big.ics"
    ics.write_text(ics_calendar(2000), encoding="utf-8")
    site = fake_distribution(tmp_path / "site", "chronos-slow", {"slow": "slow_plugin"}, {"slow_plugin": SLOW_ENRICHER})
    db_file = tmp_path / "chronos.db"
    drain = {"server": 10, "scheduler": 10}
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            "database": {"url": f"sqlite+aiosqlite:///{db_file}"},
            "logging": {"level": "warning"},
            "server": {"shutdown_timeout_seconds": drain["server"]},
            "scheduler": {"shutdown_timeout_seconds": drain["scheduler"]},
            "plugins": {"enabled": ["events", "ics", "normalize", "slow"]},
            "ics": {
                "calendars": [{"id": "big", "path": str(ics), "interval_seconds": 0}],
                "batch_size": 10,
                "parse_workers": 0,
            },
        },
    )
    with serving(cfg, env={"PYTHONPATH": str(site)}) as (proc, base):
        # The server may have begun the calendar's first sync on its own already: then 409 names it.
        started = httpx.post(f"{base}/api/v1/events/sync", json={"calendar_id": "big"}, headers=AUTH)
        assert started.status_code in (202, 409), started.text

        def batches() -> int:
            with contextlib.closing(sqlite3.connect(db_file, timeout=10)) as conn:
                row = conn.execute("SELECT batches FROM sync_runs WHERE calendar_id = 'big'").fetchone()
            return int(row[0]) if row else 0

        wait_for(lambda: batches() >= 3, 60, "the sync's third batch")

        def slow_body() -> Iterator[bytes]:
            yield b'{"title": "in flight at SIGTERM", '
            time.sleep(2)  # SIGTERM arrives meanwhile
            yield b'"start": "2026-03-01T10:00:00Z", "end": "2026-03-01T11:00:00Z"}'

        answer: list[httpx.Response] = []
        headers = {**AUTH, "Content-Type": "application/json"}
        slow = threading.Thread(
            target=lambda: answer.append(httpx.post(f"{base}/api/v1/events", content=slow_body(), headers=headers))
        )
        slow.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        # Within the two drain timeouts (and the interpreter's exit): TimeoutExpired otherwise.
        code = proc.wait(drain["server"] + drain["scheduler"] + 15)
        slow.join(10)
        # uvicorn raises the signal again once it has shut down gracefully.
        assert code in (0, -signal.SIGTERM)
        (r,) = answer
        assert r.status_code == 201, r.text

    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        status, error, count = conn.execute(
            "SELECT status, error, batches FROM sync_runs WHERE calendar_id = 'big'"
        ).fetchone()
        stored = conn.execute("SELECT count(*) FROM events WHERE calendar_id = 'big'").fetchone()[0]
        in_flight = conn.execute("SELECT count(*) FROM events WHERE title = 'in flight at SIGTERM'").fetchone()[0]
    assert status == "error" and error.startswith(f"interrupted: the service stopped after batch {count}"), (
        status,
        error,
        count,
        stored,
    )
    assert 3 <= count < 200
    assert stored == count * 10  # whole batches only
    assert in_flight == 1
