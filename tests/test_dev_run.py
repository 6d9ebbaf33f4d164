"""`scripts/dev.py run` behaves like the server it starts: a signal to its PID stops the service."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kernel_support import ROOT, clean_env, db_config, write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def serving_on(port: int) -> list[int]:
    """PIDs of live processes whose command line serves ``port``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"serve" in args and str(port).encode() in args:
            found.append(int(cmdline.parent.name))
    return found


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.1)


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_dev_run_stops_with_a_signal_to_its_pid_and_leaves_nothing_behind(database, tmp_path, stop):
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", db_config(database, plugins={"enabled": []}))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "dev.py"), "run", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(CHRONOS_CONFIG=str(cfg)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    spawned: list[int] = []
    try:

        def answers() -> bool:
            assert proc.poll() is None, proc.communicate(timeout=10)[1][-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait(answers, 120, "/health")
        spawned = children(proc.pid)
        # The PID the user started is the server itself, not a parent waiting for it.
        assert b"serve" in Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        r = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert r.status_code == 307 and r.headers["location"] == "/docs"

        os.kill(proc.pid, stop)
        proc.wait(timeout=30)
        wait(lambda: not serving_on(port), 10, "every server process to exit")
        wait(lambda: port_is_free(port), 10, f"port {port} to be free")
        wait(lambda: not [p for p in spawned if Path(f"/proc/{p}").exists()], 10, "the server's children to exit")
        stderr = proc.stderr.read() if proc.stderr else ""
        assert f"serving on http://127.0.0.1:{port}" in stderr, stderr[-3000:]
    finally:
        for pid in [proc.pid, *spawned, *serving_on(port)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
