"""`chronos serve` as users run it: a real uvicorn on a free port."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sqlite3
import subprocess
import time

import httpx
import pytest

from kernel_support import CHRONOS, ROOT, clean_env, db_config, write_config

ADMIN_KEY = "a1" * 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_get(port: int, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health", headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.mark.backends("sqlite")
def test_serve_migrates_answers_and_stops_gracefully(database, tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", db_config(database, plugins={"enabled": ["hello"]}))
    proc = subprocess.Popen(
        [CHRONOS, "serve", "--config", str(cfg), "--port", str(port)],
        cwd=ROOT,
        env=clean_env(CHRONOS_ADMIN_KEY=ADMIN_KEY),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                # The detailed report needs health.read (the bootstrap admin key has every scope).
                r = httpx.get(
                    f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=2
                )
                body = r.json()
                if body["checks"].get("jobs", {}).get("status") == "ok":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        # Migrated on start (the database was empty), jobs running, plugin loaded.
        assert body["status"] == "ok", body
        assert body["checks"]["plugins"]["plugins"]["hello"] == "enabled"

        status, headers, _ = raw_get(port, {"X-Request-ID": "edge-1"})
        assert status == 200 and headers["x-request-id"] == "edge-1"
        for size in (20_000, 60_000):
            status, headers, raw = raw_get(port, {"X-Filler": "y" * size})
            assert status == 431, raw[:200]
            assert headers["content-type"] == "application/problem+json"
            assert json.loads(raw)["status"] == 431
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/hello", json={"name": "x"}, timeout=5)
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # uvicorn re-raises SIGTERM after its graceful shutdown, as process managers expect.
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err, err
    # The lifespan's shutdown ran: the job runner removed its heartbeat row.
    db_path = database.url.split("///", 1)[1]
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM job_heartbeats").fetchone() == (0,)
        assert conn.execute("SELECT version_num FROM alembic_version_hello").fetchone() == ("hello0001",)
