"""Real Chronos processes for the production tests: ``chronos serve --no-jobs`` replicas and
``chronos worker`` processes on one database, each started from the CLI as an operator starts
it, killed with signals (by process group, never by name) and waited for with bounds."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text

from chronos.db.engine import Database
from chronos.db.models import JobRun
from kernel_support import CHRONOS, ROOT, clean_env, db_config, run_cli, write_config

ADMIN_KEY = "p7" * 24
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
_WORKER_LINE = re.compile(r"worker (\S+) running")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChronosProcess:
    """One ``chronos`` process in its own session (so a kill reaches its children, such as
    parser processes); output goes to a log file, which failures quote."""

    def __init__(self, args: list[str], config: Path, log: Path, port: int | None = None) -> None:
        self.args, self.config, self.log, self.port = args, config, log, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChronosProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [CHRONOS, *self.args, "--config", str(self.config)],
                cwd=ROOT,
                env=clean_env(CHRONOS_ADMIN_KEY=ADMIN_KEY, CHRONOS_STRICT_PLUGINS="1"),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int = signal.SIGKILL, timeout: float = 30) -> int | None:
        """Send ``sig`` to the process group and wait (bounded) for the process to end."""
        if not self.alive():
            return None
        assert self.proc is not None
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine or the OOM killer takes the process."""
        self.signal(signal.SIGKILL)

    def stop(self) -> int | None:
        return self.signal(signal.SIGTERM)

    def output(self, last: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-last:]
        except FileNotFoundError:
            return ""

    def wait_for(self, predicate: Any, timeout: float, what: str) -> Any:
        """Poll ``predicate()`` until it is truthy; fail at once, with the log, if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.alive(), (
                f"{' '.join(self.args)} exited ({self.proc and self.proc.returncode}):\n{self.output()}"
            )
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}:\n{self.output()}")


class Deployment:
    """One database, migrated once, and the processes an operator would start on it."""

    def __init__(self, database: Any, tmp_path: Path, sections: dict[str, Any]) -> None:
        self.database, self.tmp_path = database, tmp_path
        config = db_config(database, **sections)
        config["database"] = {**config["database"], "migrate_on_start": False}
        self.config = write_config(tmp_path / "chronos.yaml", config)
        self.processes: list[ChronosProcess] = []

    def migrate(self) -> None:
        res = run_cli("migrate", config=self.config, env={"CHRONOS_STRICT_PLUGINS": "1"}, timeout=120)
        assert res.returncode == 0, res.stderr

    def _process(self, args: list[str], port: int | None = None) -> ChronosProcess:
        n = len(self.processes)
        proc = ChronosProcess(args, self.config, self.tmp_path / f"{n}-{args[0]}.log", port)
        self.processes.append(proc)
        return proc

    def serve(self, port: int | None = None) -> ChronosProcess:
        """A started ``chronos serve --no-jobs`` replica (not yet waited for: see :func:`wait_ready`)."""
        port = port or free_port()
        return self._process(["serve", "--no-jobs", "--port", str(port)], port).start()

    def worker(self) -> ChronosProcess:
        """A started ``chronos worker`` (see :func:`runner_id` to wait for it)."""
        return self._process(["worker"]).start()

    def close(self) -> None:
        for proc in self.processes:
            proc.kill()

    async def job_runs(self) -> list[Any]:
        """Every job-run record, oldest first (``JobRun`` rows with typed times)."""
        db = Database(self.database.url, schema=self.database.schema)
        try:
            async with db.read() as s:
                return list((await s.execute(select(JobRun).order_by(JobRun.id))).scalars())
        finally:
            await db.dispose()

    async def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        db = Database(self.database.url, schema=self.database.schema)
        try:
            async with db.read() as s:
                return [tuple(r) for r in (await s.execute(text(sql), params)).all()]
        finally:
            await db.dispose()


@contextmanager
def deployment(database: Any, tmp_path: Path, **sections: Any) -> Iterator[Deployment]:
    """A migrated :class:`Deployment`; every process it started is killed on the way out."""
    dep = Deployment(database, tmp_path, sections)
    try:
        dep.migrate()
        yield dep
    finally:
        dep.close()


def wait_ready(proc: ChronosProcess, timeout: float = 90) -> ChronosProcess:
    """Wait until the replica answers ``/health/ready`` with 200."""

    def ready() -> bool:
        try:
            return httpx.get(f"{proc.url}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    proc.wait_for(ready, timeout, f"{proc.url} to be ready")
    return proc


def runner_id(proc: ChronosProcess, timeout: float = 90) -> str:
    """The job runner id a ``chronos worker`` prints once it runs."""

    def printed() -> str | None:
        match = _WORKER_LINE.search(proc.output(last=100_000))
        return match.group(1) if match else None

    return str(proc.wait_for(printed, timeout, "the worker to start"))


def jobs_health(base_url: str) -> dict[str, Any]:
    """The ``jobs`` check of the detailed ``/health`` report."""
    r = httpx.get(f"{base_url}/health", headers=AUTH, timeout=10)
    return dict(r.json()["checks"]["jobs"])


def overlapping_runs(runs: list[tuple[str, datetime, datetime]]) -> list[tuple[Any, Any]]:
    """Pairs of runs of the same job whose ``(job, start, end)`` intervals overlap."""
    clashes = []
    last: dict[str, tuple[str, datetime, datetime]] = {}
    for run in sorted(runs, key=lambda r: (r[0], r[1])):
        prev = last.get(run[0])
        if prev is not None and run[1] < prev[2]:
            clashes.append((prev, run))
        if prev is None or run[2] > prev[2]:
            last[run[0]] = run
    return clashes
