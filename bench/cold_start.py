"""Cold start to healthy: how long `chronos serve` takes until GET /health answers 200.

Each run starts a fresh ``chronos serve`` process on a free port with every
installed plugin enabled (except the example plugin ``hello``) and polls
``/health`` every 10 ms; the clock starts just before the process is spawned.
Two cases per backend:

* ``fresh``: an empty database, so every migration of the kernel and every
  plugin runs on start;
* ``warm``: the same database again (migrations already applied), which is the
  usual restart.

Usage::

    python bench/cold_start.py                   # SQLite and PostgreSQL, 5 runs each
    python bench/cold_start.py --backends sqlite --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHRONOS = str(Path(sys.executable).parent / "chronos")
PG_URL = os.environ.get("CHRONOS_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) the process has used so far; NaN where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def start_to_healthy(env: dict[str, str], timeout: float = 120.0) -> tuple[float, float, dict]:
    """Spawn `chronos serve`; return (wall ms until /health is 200, CPU ms it used, the body)."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [CHRONOS, "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(timeout=2) as client:
            while time.perf_counter() - started < timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"chronos serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
                try:
                    r = client.get(f"http://127.0.0.1:{port}/health")
                    if r.status_code == 200:
                        return (time.perf_counter() - started) * 1000, cpu_ms(proc.pid), r.json()
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
        raise RuntimeError("not healthy within the timeout")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def pg_schema(sql: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(PG_URL, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(sql)
    finally:
        await engine.dispose()


def env_for(url: str, schema: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHRONOS")}
    env.update(
        {
            "CHRONOS__DATABASE__URL": url,
            "CHRONOS__PLUGINS__DISABLED": '["hello"]',
            "CHRONOS__LOGGING__LEVEL": "warning",
        }
    )
    if schema:
        env["CHRONOS__DATABASE__SCHEMA"] = schema
    return env


def bench_backend(backend: str, runs: int) -> list[tuple[str, str, list[tuple[float, float]], dict]]:
    rows = []
    fresh: list[tuple[float, float]] = []
    warm: list[tuple[float, float]] = []
    body: dict = {}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="chronos-bench-") as tmp:
            if backend == "sqlite":
                url, schema = f"sqlite+aiosqlite:///{tmp}/chronos.db", None
            else:
                url, schema = PG_URL, f"bench_{uuid.uuid4().hex[:12]}"
                asyncio.run(pg_schema(f'CREATE SCHEMA "{schema}"'))
            try:
                env = env_for(url, schema)
                wall, cpu, body = start_to_healthy(env)
                fresh.append((wall, cpu))
                wall, cpu, body = start_to_healthy(env)
                warm.append((wall, cpu))
            finally:
                if schema:
                    asyncio.run(pg_schema(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    rows.append((backend, "fresh", fresh, body))
    rows.append((backend, "warm", warm, body))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    results = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        results += bench_backend(backend, args.runs)

    plugins = sorted(
        n for n, s in results[-1][3].get("checks", {}).get("plugins", {}).get("plugins", {}).items() if s == "enabled"
    )
    print("# cold start to healthy: `chronos serve` until GET /health is 200")
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.2f}; {args.runs} runs per row"
    )
    print(f"# plugins enabled: {', '.join(plugins) or 'none'}")
    # Wall time depends on what else the machine runs; CPU time of the server process much less so.
    print(f"{'backend':<11} {'database':<9} {'min ms':>8} {'median ms':>10} {'max ms':>8} {'median cpu ms':>14}")
    for backend, case, values, _body in results:
        walls = [w for w, _ in values]
        cpus = [c for _, c in values]
        print(
            f"{backend:<11} {case:<9} {min(walls):>8.0f} {statistics.median(walls):>10.0f} {max(walls):>8.0f}"
            f" {statistics.median(cpus):>14.0f}"
        )


if __name__ == "__main__":
    main()
